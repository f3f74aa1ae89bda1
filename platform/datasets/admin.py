"""Admin for snapshots (adding one freezes it; the build runs in Celery), API tokens, and downloads."""

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from jobs.admin import JobAdminMixin
from jobs.services import QUEUE_DOWN

from . import services, tasks
from .models import ApiToken, DownloadLog, Snapshot


class FreezeForm(forms.ModelForm):
    class Meta:
        model = Snapshot
        fields = ["study", "license", "citation", "access"]

    def clean(self):
        cleaned = super().clean()
        study = cleaned.get("study")
        if study is not None:
            try:
                services.check_freezable(study)
            except services.FreezeRefused as refused:
                raise forms.ValidationError(str(refused)) from None
        return cleaned


@admin.register(Snapshot)
class SnapshotAdmin(JobAdminMixin, admin.ModelAdmin):
    list_display = ["name", "study", *JobAdminMixin.JOB_COLUMNS, "access", "triplets", "votes",
                    "files_count", "created_at"]  # fmt: skip
    list_filter = [*JobAdminMixin.JOB_FILTERS, "access"]
    search_fields = ["name", "study__slug"]
    readonly_fields = ["name", "study", *JobAdminMixin.JOB_FIELDS, "vote_cutoff", "content_hash",
                       "files_count", "bytes_total", "vote_detail", "triplets", "created_by",
                       "link", "link_token"]  # fmt: skip
    fields = ["name", "study", *JobAdminMixin.JOB_FIELDS, "link", "access", "link_token",
              "license", "citation", "vote_cutoff", "content_hash", "files_count", "bytes_total",
              "vote_detail", "triplets", "created_by"]  # fmt: skip

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = FreezeForm
            kwargs["fields"] = FreezeForm.Meta.fields
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return FreezeForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            # Only access, license and citation can change; the files never do.
            Snapshot.objects.filter(pk=obj.pk).update(
                access=obj.access, license=obj.license, citation=obj.citation
            )
            return
        frozen = services.freeze(
            obj.study, user=request.user, license=obj.license, citation=obj.citation,
            enqueue=tasks.enqueue_build,
        )  # fmt: skip
        Snapshot.objects.filter(pk=frozen.pk).update(access=obj.access)
        obj.pk = frozen.pk
        obj.refresh_from_db()
        if frozen.enqueued is False:
            messages.warning(request, QUEUE_DOWN.format(what=obj.name))
        else:
            messages.info(request, f"Freezing {obj.name}: progress shows in the list.")

    @admin.display(description="Votes")
    def votes(self, snapshot):
        """The snapshot's vote counts side by side, in the words every page uses."""
        return format_html_join(
            " · ", "<span title='{}'>{} {}</span>",
            ((rule, label, "–" if value is None else value)
             for _, label, rule, value in snapshot.main_counts),
        )  # fmt: skip

    @admin.display(description="Votes")
    def vote_detail(self, snapshot):
        """Every vote count with the rule that defines it."""
        return format_html(
            "<table>{}</table>",
            format_html_join(
                "", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
                ((label, "–" if value is None else value, rule)
                 for _, label, rule, value in snapshot.counts),
            ),
        )  # fmt: skip

    @admin.display(description="Page")
    def link(self, snapshot):
        return format_html("<a href='{}'>{}</a>", snapshot.get_absolute_url(), snapshot.name)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["hint", "user", "name", "created_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    readonly_fields = ["hint", "created_at", "last_used_at"]

    def get_fields(self, request, obj=None):
        return ["user", "name"] if obj is None else ["user", "name", "hint", "revoked",
                                                      "created_at", "last_used_at"]  # fmt: skip

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = ApiToken.issue(obj.user, name=obj.name)
        obj.pk = token.pk
        obj.refresh_from_db()
        messages.warning(request, f"API token (shown once, copy it now): {raw}")


@admin.register(DownloadLog)
class DownloadLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "snapshot", "path", "via", "user", "ip", "byte_range", "bytes",
                    "bytes_sent"]  # fmt: skip
    list_filter = ["via"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
