"""Admin for DPL fits: "Add fit job" starts a fit of a study on the Celery ``cpu`` queue; the
list and the job page show its progress, its error and links to the weights and model card."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from jobs.admin import JobAdminMixin
from jobs.services import QUEUE_DOWN

from . import tasks
from .models import FitJob, FitReport

# The fitting stack (services, dpl) loads torch: it is imported when a fit is configured,
# not when the admin loads, so web processes that never fit stay small.


def _backbones() -> list[tuple[str, str]]:
    from .dpl import BACKBONES  # deferred: dpl loads torch, which web processes never need

    return [(b, b) for b in BACKBONES]


class FitJobForm(forms.ModelForm):
    backbone = forms.ChoiceField(choices=_backbones)

    class Meta:
        model = FitJob
        fields = ["study", "backbone", "loss", "epochs", "seed"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        from . import services  # deferred: services load torch (through dpl)

        try:
            services.check_fit_settings(
                cleaned["study"], cleaned["backbone"], cleaned["loss"], cleaned["epochs"]
            )
        except ValidationError as error:
            raise forms.ValidationError(error.messages) from None
        return cleaned


@admin.register(FitJob)
class FitJobAdmin(JobAdminMixin, admin.ModelAdmin):
    """Adding a job is the "Fit DPL" button: saving queues the fit."""

    form = FitJobForm
    list_display = ["study", "backbone", "loss", *JobAdminMixin.JOB_COLUMNS, "created_at", "result"]
    list_filter = [*JobAdminMixin.JOB_FILTERS, "backbone"]
    readonly_fields = [
        "study", "backbone", "loss", "epochs", "seed", *JobAdminMixin.JOB_FIELDS, "result",
    ]  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else FitJobForm.Meta.fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        from . import services  # deferred: services load torch (through dpl)

        services.queue_fit(obj, enqueue=tasks.enqueue_fit)
        if obj.enqueued is False:
            messages.warning(request, QUEUE_DOWN.format(what=f"Fit job {obj.pk}"))

    @admin.display(description="Result")
    def result(self, job):
        if job.report is None:
            return "-"
        afc = job.report.result["afc"].get("dpl")
        return format_html(
            "test 2AFC {} · <a href='{}'>report</a> · <a href='{}'>results page</a>",
            "-" if afc is None else f"{afc:.3f}",
            reverse("admin:analytics_fitreport_change", args=[job.report.pk]),
            reverse("analytics:results", args=[job.study.slug]),
        )


@admin.register(FitReport)
class FitReportAdmin(admin.ModelAdmin):
    list_display = ["study", "backbone", "loss", "created_at", "weights_path"]
    readonly_fields = ["study", "backbone", "loss", "result", "weights_path", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
