"""Admin for configuring studies: sources, codec conditions, and a Generate button with progress."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html

import twoafc_codecs

from . import services, tasks
from .models import Condition, GenerationJob, SourceImage, Study


class ConditionForm(forms.ModelForm):
    codec = forms.ChoiceField(choices=[])

    class Meta:
        model = Condition
        fields = ["codec", "level", "target_bpp"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["codec"].choices = [
            (name, f"{name} — {twoafc_codecs.get_codec(name).label}")
            for name in twoafc_codecs.available_codecs()
        ]


class ConditionInline(admin.TabularInline):
    model = Condition
    form = ConditionForm
    extra = 2

    # An imported study's conditions only label where its stimuli came from.
    def has_add_permission(self, request, obj=None):
        return not _imported(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not _imported(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not _imported(obj) and super().has_delete_permission(request, obj)


def _imported(study: Study | None) -> bool:
    return study is not None and study.origin == Study.Origin.IMPORTED


class SourceImageInline(admin.TabularInline):
    model = SourceImage
    fields = ["name", "image", "width", "height"]
    readonly_fields = ["name", "image", "width", "height"]
    extra = 0
    can_delete = True

    def has_add_permission(self, request, obj=None):
        return False  # uploads go through the validated field on the study form


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleImageField, self).clean(item, initial) for item in files]


class StudyForm(forms.ModelForm):
    upload_images = MultipleImageField(
        required=False,
        help_text="Add source images (PNG, JPEG, …). Each is checked before it is stored.",
    )

    class Meta:
        model = Study
        fields = "__all__"


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    form = StudyForm
    list_display = ["name", "slug", "status", "generation_progress", "rater_link", "results_link"]
    list_filter = ["status", "origin"]
    readonly_fields = ["status", "origin", "generation_progress", "rater_link", "results_link"]
    inlines = [ConditionInline, SourceImageInline]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "status", "origin"]}),
        (
            "Stimuli",
            {"fields": ["patch_size", "patches_per_image", "crop_size", "seed", "upload_images"]},
        ),
        (
            "Triplet design and assignment",
            {
                "fields": [
                    "votes_per_triplet",
                    "trials_per_session",
                    "practice_trials",
                    "break_every",
                    "sentinel_rate",
                    "repeat_rate",
                    "lease_minutes",
                    "duplicate_policy",
                ]
            },
        ),  # fmt: skip
        ("Display", {"fields": ["display_mode", "flicker_hz", "zoom", "min_display_ms"]}),
        ("Rater texts", {"fields": ["consent_text", "instructions_text", "debrief_text"]}),
        ("Recruiting (Prolific, MTurk)", {"fields": ["completion_code", "screened_out_code"]}),
        (
            "Quality control",
            {
                "fields": [
                    "qc_min_sentinel_accuracy",
                    "qc_min_repeat_agreement",
                    "qc_min_median_rt_ms",
                    "qc_fast_rt_ms",
                    "qc_max_fast_share",
                    "qc_max_side_share",
                    "exclude_flagged_raters",
                ]
            },
        ),  # fmt: skip
        ("Progress", {"fields": ["generation_progress", "rater_link", "results_link"]}),
    ]
    change_form_template = "admin/studies/study/change_form.html"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        for upload in form.cleaned_data.get("upload_images") or []:
            try:
                services.add_source_image(form.instance, upload.read(), upload.name)
            except ValidationError as error:
                messages.error(request, " ".join(error.messages))

    @admin.display(description="Generation")
    def generation_progress(self, study):
        job = study.latest_job
        if job is None:
            return "not started"
        text = f"{job.get_status_display()}: {job.progress} chunks"
        return (
            format_html("{}<br><span style='color:#b00'>{}</span>", text, job.error)
            if job.error
            else text
        )

    @admin.display(description="Rater URL")
    def rater_link(self, study):
        if not study.pk:
            return "-"
        url = study.get_absolute_url()
        return format_html("<a href='{}'>{}</a>", url, url)

    @admin.display(description="Results")
    def results_link(self, study):
        if not study.pk:
            return "-"
        url = reverse("analytics:results", args=[study.slug])
        return format_html(
            "<a href='{}'>results</a> · <a href='{}'>download</a>",
            url,
            reverse("datasets:download", args=[study.slug]),
        )

    def get_urls(self):
        custom = [
            path(
                "<int:study_id>/generate/",
                self.admin_site.admin_view(self.generate_view),
                name="studies_study_generate",
            ),
        ]
        return custom + super().get_urls()

    def generate_view(self, request, study_id: int):
        study = get_object_or_404(Study, pk=study_id)
        change_url = reverse("admin:studies_study_change", args=[study.pk])
        if request.method != "POST":
            return redirect(change_url)
        try:
            job = services.start_generation(study, enqueue=tasks.enqueue_generation)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"Generation started (job {job.pk}). Progress shows below.")
        return redirect(change_url)


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["study", "status", "progress", "created_at", "finished_at", "error"]
    list_filter = ["status"]
    readonly_fields = ["study", "status", "total", "done", "error", "created_at", "finished_at"]

    def has_add_permission(self, request):
        return False
