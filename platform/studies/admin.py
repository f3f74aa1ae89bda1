"""Admin for configuring studies: sources, codec conditions, and a Generate button with progress."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

import twoafc_codecs

from . import services, tasks
from .models import Condition, GenerationJob, SourceImage, Study


def codec_choices() -> list:
    """The codec select: a blank first entry, then each codec with its knob's range.

    The blank entry matters: a select without one submits its first codec, so every
    untouched "add a condition" row would look filled in and fail to save.
    """
    groups: dict[str, list] = {"cpu": [], "gpu": []}
    for name in twoafc_codecs.available_codecs():
        codec = twoafc_codecs.get_codec(name)
        label = f"{name} — {codec.label}: {codec.level_name} {codec.describe_range()}"
        groups.setdefault(codec.queue, []).append((name, label))
    return [
        ("", "---------"),
        ("Image codecs (cpu workers)", groups.pop("cpu")),
        ("Learned codecs and GPU JPEG (gpu workers, or a worker's CPU)", groups.pop("gpu")),
        *((f"{queue} workers", choices) for queue, choices in groups.items() if choices),
    ]


class ConditionForm(forms.ModelForm):
    codec = forms.ChoiceField(choices=[], error_messages={"required": "Choose a codec."})

    class Meta:
        model = Condition
        fields = ["codec", "level", "target_bpp"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["codec"].choices = codec_choices()


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


class UploadImagesInput(forms.FileInput):
    """A file chooser for several images, followed by the images kept from a failed save.

    ``staged`` (set by the admin before a form is shown again) is the token and the
    files kept under it; they travel in a hidden ``<name>_staged`` field and are
    listed by name, since the browser's chooser comes back empty.
    """

    allow_multiple_selected = True
    staged: tuple[str, list] | None = None

    def render(self, name, value, attrs=None, renderer=None):
        chooser = super().render(name, value, attrs, renderer)
        if not self.staged:
            return chooser
        token, uploads = self.staged
        return format_html(
            '{}<input type="hidden" name="{}_staged" value="{}">'
            '<div class="help staged-uploads-note">Kept from the form you sent, and added '
            'when the study is saved (no need to choose them again):</div>'
            '<ul class="staged-uploads">{}</ul>',
            chooser,
            name,
            token,
            format_html_join("", "<li>{}</li>", ((upload.name,) for upload in uploads)),
        )


class MultipleImageField(forms.FileField):
    widget = UploadImagesInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleImageField, self).clean(item, initial) for item in files]


def refused_upload_message(error: ValidationError) -> str:
    """"<name> was not added: <reason>.", the name exactly as uploaded."""
    params = error.params or {}
    if "name" not in params:
        return " ".join(error.messages)
    return f"{params['name']} was not added: {params['reason'].rstrip('.')}."


class StudyForm(forms.ModelForm):
    upload_images = MultipleImageField(
        required=False,
        help_text="Choose one or more images (PNG, JPEG, …); they are added when you save. "
        "Each must be at least as large as the crop; a file that is not a usable image is "
        "named and left out.",
    )

    class Meta:
        model = Study
        fields = "__all__"

    @property
    def staged_token(self) -> str | None:
        """The token of images kept from an earlier, failed save of this form."""
        return self.data.get(self.add_prefix("upload_images") + "_staged") or None

    def keep_uploads(self) -> None:
        """The form is going back to the browser with errors: keep its chosen images."""
        chosen = [
            (upload.name, b"".join(upload.chunks()))
            for upload in self.files.getlist(self.add_prefix("upload_images"))
            if upload.size
        ]
        token = self.staged_token
        if chosen:
            token = services.stage_uploads(token, chosen)
        uploads = services.staged_uploads(token)
        if uploads:
            self.fields["upload_images"].widget.staged = (token, uploads)

    def uploads(self) -> list[tuple[str, bytes]]:
        """Every image to add once the study is saved: those kept earlier, then those sent now."""
        kept = [
            (upload.name, services.read_staged(upload))
            for upload in services.staged_uploads(self.staged_token)
        ]
        chosen = [(upload.name, upload.read()) for upload in self.cleaned_data["upload_images"]]
        return kept + chosen


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
        ("Display", {"fields": ["display_mode", "flicker_hz", "zoom"]}),
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
        for name, data in form.uploads():
            try:
                services.add_source_image(form.instance, data, name)
            except ValidationError as error:
                messages.error(request, refused_upload_message(error))
        services.discard_staged(form.staged_token)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        form = context["adminform"].form
        if request.method == "POST" and form.is_bound:
            form.keep_uploads()  # only a form with errors is shown again after a POST
        return super().render_change_form(request, context, add, change, form_url, obj)

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
        except services.NothingToGenerate as nothing:
            messages.info(request, " ".join(nothing.messages))
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
