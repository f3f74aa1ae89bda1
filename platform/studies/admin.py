"""Admin for configuring studies: sources, codec conditions, and a Generate button with progress."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

import twoafc_codecs
from jobs.admin import JobAdminMixin

from . import services, tasks
from .models import Condition, GenerationJob, ReferencePatch, SourceImage, Study


def codec_choices() -> list:
    """The codec select: a blank first entry, then each codec with its knob's range.

    The blank entry matters: a select without one submits its first codec, so every
    untouched "add a condition" row would look filled in and fail to save.
    """
    groups: dict[str, list] = {"cpu": [], "gpu": []}
    for name in twoafc_codecs.available_codecs():
        codec = twoafc_codecs.get_codec(name)
        label = f"{name} — {codec.label}; {codec.level_name} {codec.describe_range()}"
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
        # Its stimuli were made at this setting and are never made again (their chunks
        # are done): changed, the condition would describe stimuli it did not make.
        if self.instance.pk and self.instance.encodings.exists():
            for field in self.fields.values():
                field.disabled = True
                field.widget.attrs["title"] = (
                    "This condition has stimuli: add a new condition rather than change it."
                )


class KeepVotesFormSet(forms.BaseInlineFormSet):
    """Refuses to delete a condition or source image that raters have voted on.

    Its stimuli, triplets and their votes would all be deleted with it, from one
    ticked box and without a confirmation page.
    """

    def clean(self):
        super().clean()
        for form in self.deleted_forms:
            votes = services.votes_cast_on(form.instance) if form.instance.pk else 0
            if votes:
                raise ValidationError(
                    f"{form.instance} cannot be deleted here: raters cast {votes} votes on "
                    "its stimuli, and they would be deleted with it."
                )


class ConditionInline(admin.TabularInline):
    model = Condition
    form = ConditionForm
    formset = KeepVotesFormSet
    extra = 2
    verbose_name = "codec condition"

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
    formset = KeepVotesFormSet
    verbose_name_plural = "images in this study"
    fields = ["name", "preview", "width", "height"]
    readonly_fields = ["name", "preview", "width", "height"]
    extra = 0
    can_delete = True

    def has_add_permission(self, request, obj=None):
        return False  # uploads go through the validated field on the study form

    @admin.display(description="Image")
    def preview(self, source):
        return format_html(
            '<a href="{}"><img src="{}" alt="" style="max-height:64px;max-width:128px"></a>',
            source.image.url,
            source.image.url,
        )


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
        # One block: the field's row is a flex container, which would set a note and a
        # list beside the chooser in narrow columns.
        return format_html(
            '<div class="upload-images">{}<input type="hidden" name="{}_staged" value="{}">'
            '<p class="staged-uploads-note"><b>Kept from the form you sent</b>, and added '
            "when the study is saved (no need to choose them again):</p>"
            '<ul class="staged-uploads">{}</ul></div>',
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
    """The message "<name> was not added: <reason>.", with the name exactly as uploaded."""
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


# Fields that decide where patches are cut: fixed once a source has its patches, or a
# study would mix patch sizes and positions (later sources would be cut differently).
GEOMETRY_FIELDS = ["patch_size", "patches_per_image", "crop_size", "seed"]
WORKER_HINT = "celery -A twoafc worker -Q cpu (and -Q gpu for learned codecs)"
QUEUED_HINT_AFTER = timedelta(minutes=1)
ACTIVE_JOB = [GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING]


def describe_generation(study: Study) -> str:
    """The study's generation, in words: what its latest job is doing, or why it stopped.

    Wrapped in a span whose ``data-active`` tells the change page to keep polling.
    """
    job = study.latest_job
    active = job is not None and job.status in ACTIVE_JOB
    if job is None and study.origin == Study.Origin.IMPORTED:
        text = "Imported with its stimuli: never generated."
    elif job is None:
        text = mark_safe(
            "Not started. Press <b>Generate</b> once the study has source images and at "
            "least two conditions."
        )
    elif job.status == GenerationJob.Status.QUEUED:
        waiting = timezone.now() - job.created_at
        text = (
            format_html(
                "Queued {} ago, and no worker has taken it yet: is one running? <code>{}</code>",
                timesince(job.created_at),
                WORKER_HINT,
            )
            if waiting > QUEUED_HINT_AFTER
            else "Queued: waiting for a Celery worker to take it."
        )
    elif job.status == GenerationJob.Status.RUNNING:
        text = format_html(
            '<progress value="{}" max="{}"></progress> '
            "Running: {} of {} encodes done (one per source image × condition).",
            job.done, max(job.total, 1), job.done, job.total,
        )  # fmt: skip
    elif job.status == GenerationJob.Status.DONE:
        text = format_html(
            "Done: {} of {} encodes, {} triplets ready for rating.",
            job.done, job.total, study.triplets.count(),
        )  # fmt: skip
    else:
        text = format_html(
            '<span class="generation-error" style="color:#ba2121">Failed: {}</span><br>'
            "Fix the cause, then press Generate again: finished encodes are kept.",
            job.error or "no reason recorded",
        )
    return format_html(
        '<span class="generation" data-active="{}" data-status="{}">{}</span>',
        "true" if active else "false",
        job.status if job else "none",
        text,
    )


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    form = StudyForm
    list_display = ["name", "slug", "status", "generation_progress", "rater_link", "results_link"]
    list_filter = ["status", "origin"]
    readonly_fields = [
        "status", "origin", "generation_progress", "rater_link", "results_link", "declined",
    ]  # fmt: skip
    inlines = [ConditionInline, SourceImageInline]
    # The change form template puts the conditions inline after "Stimuli" and the list of
    # source images after "Source images": what makes the stimuli stays together.
    fieldsets = [
        (None, {"fields": ["name", "slug", "description"]}),
        (
            "Generation",
            {
                "fields": [
                    "status", "generation_progress", "rater_link", "results_link", "origin",
                    "declined",
                ]
            },  # fmt: skip
        ),
        (
            "Stimuli",
            {
                "fields": GEOMETRY_FIELDS,
                "description": "Where patches are cut. Fixed once stimuli are generated. "
                "Below: the codec conditions, each a codec at a level of its quality knob "
                "or at a target bitrate (bits per pixel).",
            },
        ),
        ("Source images", {"fields": ["upload_images"]}),
        (
            "Triplet design and assignment",
            {
                "fields": [
                    "votes_per_triplet",
                    "trials_per_session",
                    "practice_trials",
                    "break_every",
                    "sentinel_rate",
                    "min_sentinels",
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
                    "qc_careful_accuracy",
                    "qc_screen_out_alpha",
                    "qc_min_repeat_agreement",
                    "qc_min_median_rt_ms",
                    "qc_fast_rt_ms",
                    "qc_max_fast_share",
                    "qc_max_side_share",
                    "exclude_flagged_raters",
                ]
            },
        ),  # fmt: skip
    ]
    change_form_template = "admin/studies/study/change_form.html"

    def get_inlines(self, request, obj):
        # A new study has no images to list yet; the chooser above adds them.
        return [ConditionInline] if obj is None else self.inlines

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:  # nothing has been generated yet
            fieldsets = [fieldset for fieldset in fieldsets if fieldset[0] != "Generation"]
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and (
            ReferencePatch.objects.filter(source__study=obj).exists()
            or obj.generation_jobs.filter(status__in=ACTIVE_JOB).exists()  # about to cut them
        ):
            readonly += GEOMETRY_FIELDS
        return readonly

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

    # "Save and generate" (and Generate at the top, which presses it) submits the study
    # form: edits made on the page are saved first, and generation runs on what the admin sees.
    def response_add(self, request, obj, post_url_continue=None):
        if "_generate" in request.POST:
            return self.save_and_generate(request, obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if "_generate" in request.POST:
            return self.save_and_generate(request, obj)
        return super().response_change(request, obj)

    def save_and_generate(self, request, study: Study):
        self.start_generation(request, study, saved=True)
        return redirect(reverse("admin:studies_study_change", args=[study.pk]))

    @admin.display(description="Declined consent")
    def declined(self, study):
        return f"{study.declined_count} (a count: nothing else of them is stored)"

    @admin.display(description="Progress")
    def generation_progress(self, study):
        return describe_generation(study) if study.pk else "-"

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
            path(
                "<int:study_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="studies_study_progress",
            ),
        ]
        return custom + super().get_urls()

    def start_generation(self, request, study: Study, saved: bool = False) -> None:
        saved_text = "Saved. " if saved else ""
        try:
            job = services.start_generation(study, enqueue=tasks.enqueue_generation)
        except services.NothingToGenerate as nothing:
            messages.info(request, saved_text + " ".join(nothing.messages))
        except ValidationError as error:
            messages.error(request, saved_text + " ".join(error.messages))
        else:
            messages.success(
                request,
                f"{saved_text}Generation started (job {job.pk}). Progress shows below "
                "and updates by itself.",
            )

    def generate_view(self, request, study_id: int):
        study = get_object_or_404(Study, pk=study_id)
        if not self.has_change_permission(request, study):
            raise PermissionDenied
        change_url = reverse("admin:studies_study_change", args=[study.pk])
        if request.method == "POST":
            self.start_generation(request, study)
        return redirect(change_url)

    def progress_view(self, request, study_id: int):
        """What the change page shows about generation, for it to refresh in place."""
        study = get_object_or_404(Study, pk=study_id)
        if not self.has_view_permission(request, study):
            raise PermissionDenied
        return JsonResponse(
            {"status": study.get_status_display(), "generation": describe_generation(study)}
        )


@admin.register(GenerationJob)
class GenerationJobAdmin(JobAdminMixin, admin.ModelAdmin):
    list_display = ["study", *JobAdminMixin.JOB_COLUMNS, "created_at", "finished_at"]
    list_filter = JobAdminMixin.JOB_FILTERS
    readonly_fields = [
        "study",
        *JobAdminMixin.JOB_FIELDS,
        "encode_s",
        "crop_s",
        "storage_s",
        "db_s",
    ]
    fields = readonly_fields

    def has_add_permission(self, request):
        return False
