"""What a study is made of.

A study has source images and codec conditions (codec × level). Generation cuts
reference patches from each source, encodes the whole (cropped) source once per
condition, and cuts the stimuli from the decoded image at the reference
patches' positions, so bits per pixel are those of a real-sized encode.
Triplets pair two stimuli of the same reference patch.
"""

import random
import secrets

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.urls import reverse
from django.utils.text import slugify

import twoafc_codecs
from jobs.models import Job
from studies import screening


def _completion_code() -> str:
    return secrets.token_hex(4).upper()


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready for rating"
        COMPLETE = "complete", "Complete: every triplet has its votes"
        FAILED = "failed", "Generation failed"

    class DisplayMode(models.TextChoices):
        SIDE_BY_SIDE = "side-by-side", "Side by side"
        FLICKER = "flicker", "Flicker (each side alternates with the reference)"

    class DuplicatePolicy(models.TextChoices):
        REFUSE = "refuse", "Refuse a second tab or attempt"
        JOIN = "join", "Join it to the same session"

    class Origin(models.TextChoices):
        COLLECTED = "collected", "Collected here: generated stimuli, votes from raters"
        IMPORTED = "imported", "Imported from a dataset: never generated or rated"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True, blank=True)
    description = models.TextField(blank=True)
    patch_size = models.PositiveIntegerField(default=64)
    patches_per_image = models.PositiveIntegerField(default=8)
    crop_size = models.PositiveIntegerField(
        default=512,
        null=True,
        blank=True,
        help_text="Codecs encode this centre crop of each source (blank: the whole image). "
        "Never a lone patch: at 64×64 a codec's headers dominate the bits.",
    )
    votes_per_triplet = models.PositiveIntegerField(default=3)
    trials_per_session = models.PositiveIntegerField(default=20)
    practice_trials = models.PositiveIntegerField(
        default=3, help_text="Flagged and left out of the data."
    )
    break_every = models.PositiveIntegerField(
        default=40, help_text="Trials between breaks (0: none)."
    )
    sentinel_rate = models.FloatField(
        default=0.10, help_text="Share of extra trials where one side is the reference itself."
    )
    min_sentinels = models.PositiveIntegerField(
        default=8,
        help_text="Sentinels per session at the least: a session gets the larger of this and "
        "sentinel rate × its regular trials. The screen-out rule needs 8 with the default "
        "quality-control settings (the form says how many for others); 0 with a sentinel "
        "rate of 0: no sentinels, and no one is screened out.",
    )
    repeat_rate = models.FloatField(
        default=0.05,
        help_text="Share of extra trials repeating an earlier one with the sides swapped.",
    )
    lease_minutes = models.PositiveIntegerField(
        default=30, help_text="Unanswered trials of a session idle this long go back to the pool."
    )
    duplicate_policy = models.CharField(
        max_length=8, choices=DuplicatePolicy.choices, default=DuplicatePolicy.REFUSE
    )
    # What raters see.
    zoom = models.PositiveSmallIntegerField(
        default=4, help_text="Screen pixels per image pixel, at most."
    )
    display_mode = models.CharField(
        max_length=16, choices=DisplayMode.choices, default=DisplayMode.SIDE_BY_SIDE
    )
    flicker_hz = models.FloatField(default=8.0, help_text="Flicker mode: alternations per second.")
    min_display_ms = models.PositiveIntegerField(
        default=200,
        help_text="A response counts only once the three images have been on screen this long "
        "(ms); earlier key presses or taps are ignored.",
    )
    consent_text = models.TextField(blank=True)
    instructions_text = models.TextField(blank=True)
    debrief_text = models.TextField(blank=True)
    # Recruiting: codes the crowd market expects at the end.
    completion_code = models.CharField(max_length=32, default=_completion_code)
    screened_out_code = models.CharField(
        max_length=32,
        default=_completion_code,
        help_text="Given to raters who fail the sentinel trials.",
    )
    # People who saw the consent screen and declined: nothing else of them is stored.
    declined_count = models.PositiveIntegerField(default=0, editable=False)
    # Quality-control thresholds (see quality.services for what each measures).
    # The screen-out rule on sentinels (studies.screening): a session is screened out when
    # its sentinel answers would happen with probability at most alpha to a careful rater.
    qc_careful_accuracy = models.FloatField(
        default=screening.CAREFUL_ACCURACY,
        help_text="Share of sentinels a careful rater gets right (the reference is picked).",
    )
    qc_screen_out_alpha = models.FloatField(
        default=screening.FALSE_SCREEN_OUT,
        help_text="The most often a careful rater may be screened out (0.01: one in a hundred).",
    )
    qc_min_repeat_agreement = models.FloatField(default=0.5)
    qc_min_median_rt_ms = models.FloatField(default=400)
    qc_fast_rt_ms = models.FloatField(
        default=300, help_text="A response faster than this is too fast."
    )
    qc_max_fast_share = models.FloatField(default=0.2)
    qc_max_side_share = models.FloatField(
        default=0.9, help_text="Share of answers on one side (position bias)."
    )
    exclude_flagged_raters = models.BooleanField(
        default=True, help_text="Exports and fits leave out raters flagged by quality control."
    )
    seed = models.PositiveIntegerField(default=0, help_text="Seeds patch positions.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.COLLECTED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:80] or secrets.token_hex(4)
        super().save(*args, **kwargs)

    def clean(self):
        if self.patch_size < 8 or self.patch_size > 512:
            raise ValidationError({"patch_size": "Patch size must be between 8 and 512 pixels."})
        if self.crop_size and self.crop_size < self.patch_size:
            raise ValidationError({"crop_size": "The crop must be at least one patch wide."})
        if self.votes_per_triplet < 1:
            raise ValidationError({"votes_per_triplet": "At least one vote per triplet."})
        for rate in ("sentinel_rate", "repeat_rate"):
            if not 0 <= getattr(self, rate) <= 0.5:
                raise ValidationError({rate: "Use a share between 0 and 0.5."})
        if self.zoom < 1 or self.flicker_hz <= 0:
            raise ValidationError("Zoom must be at least 1 and the flicker rate positive.")
        self._clean_screen_out()

    def _clean_screen_out(self) -> None:
        """Refuse a design whose sessions get sentinels, but too few for the screen-out rule."""
        careful, alpha = self.qc_careful_accuracy, self.qc_screen_out_alpha
        if not screening.CLICKER_ACCURACY < careful < 1:
            raise ValidationError(
                {"qc_careful_accuracy": "Use an accuracy above 0.5 (chance) and below 1."}
            )
        if not 0 < alpha < 0.5:
            raise ValidationError({"qc_screen_out_alpha": "Use a rate above 0 and below 0.5."})
        try:
            needed = screening.min_sentinels(careful, alpha)
        except ValueError as error:  # p_c too near chance for any sensible session
            raise ValidationError({"qc_careful_accuracy": str(error)}) from None
        given = self.sentinels_per_session()
        if 0 < given < needed:
            power = screening.screen_out_probability(
                given, screening.CLICKER_ACCURACY, careful, alpha
            )
            raise ValidationError({"min_sentinels": (
                f"A session gets {given} sentinel(s), too few for the screen-out rule: it "
                f"would screen out a rater answering at random with probability {power:.0%}. "
                f"With careful accuracy {careful:g} and false screen-out rate {alpha:g} it "
                f"needs at least {needed} for {screening.POWER:.0%}. Set at least {needed}, "
                "or 0 with a sentinel rate of 0 for no sentinels and no screening out."
            )})  # fmt: skip

    def sentinels_per_session(self, regular: int | None = None) -> int:
        """How many sentinels a session with ``regular`` regular trials gets (default: a full
        session): the larger of ``min_sentinels`` and ``sentinel_rate`` of its regular trials."""
        regular = self.trials_per_session if regular is None else regular
        if regular <= 0:
            return 0
        return max(self.min_sentinels, round(regular * self.sentinel_rate))

    @property
    def sentinel_pass_accuracy(self) -> float:
        """The least share of sentinels a full session must get right not to be screened out."""
        given = self.sentinels_per_session()
        if not given:
            return 0.0
        cutoff = screening.screen_out_cutoff(
            given, self.qc_careful_accuracy, self.qc_screen_out_alpha
        )
        return (cutoff + 1) / given

    def get_absolute_url(self) -> str:
        return reverse("rating:rate", args=[self.slug])

    @property
    def latest_job(self):
        return self.generation_jobs.order_by("-created_at").first()


class SourceImage(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="sources")
    name = models.CharField(max_length=200)
    image = models.ImageField(upload_to="sources/")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "sha256"], name="unique_source_per_study")
        ]

    def __str__(self) -> str:
        return self.name


IMPORTED_CODEC = "imported"


class Condition(models.Model):
    """One codec at one setting of its quality knob, or at a target bitrate.

    An imported study (``Study.Origin.IMPORTED``) has conditions ``imported@k``
    instead: ``k`` numbers the distinct distorted images of one reference, since
    the codec that made them is unknown.

    With ``target_bpp`` set, each source is encoded at the knob setting whose
    whole-image bitrate is nearest the target (bisection on the knob), so codecs
    can be compared at matched bitrates; the level found is stored per encoding.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    # No model-level choices: the codec registry grows without migrations; clean() checks it.
    codec = models.CharField(max_length=40)
    level = models.IntegerField(
        null=True, blank=True, help_text="The codec's quality knob (its range is checked)."
    )
    target_bpp = models.FloatField(
        null=True, blank=True, help_text="Or a target bitrate in bits per pixel, e.g. 0.4."
    )

    class Meta:
        ordering = ["codec", "level", "target_bpp"]
        constraints = [
            models.UniqueConstraint(fields=["study", "codec", "level"], name="unique_condition"),
            models.UniqueConstraint(
                fields=["study", "codec", "target_bpp"], name="unique_rate_condition"
            ),
            models.CheckConstraint(
                condition=models.Q(level__isnull=True) ^ models.Q(target_bpp__isnull=True),
                name="level_xor_target_bpp",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.codec}@{self.target_bpp:g}bpp"
            if self.rate_targeted
            else f"{self.codec}@{self.level}"
        )

    @property
    def rate_targeted(self) -> bool:
        return self.target_bpp is not None

    def validate(self) -> None:
        """Raise CodecError for an unknown codec, a level out of range or a bad target.

        An imported study's conditions only label where its stimuli came from
        (``IMPORTED_CODEC``): they are refused, so such a study is never generated.
        """
        if self.study_id is not None and self.study.origin == Study.Origin.IMPORTED:
            raise twoafc_codecs.CodecError(
                f"{self}: study {self.study.slug!r} was imported; its stimuli came with the data "
                "and are never generated"
            )
        if self.level is None and self.target_bpp is None:
            codec = twoafc_codecs.get_codec(self.codec)
            raise twoafc_codecs.CodecError(
                f"{self.codec}: give a {codec.level_name} from {codec.describe_range()}, "
                "or a target bitrate in bits per pixel"
            )
        if self.level is not None and self.target_bpp is not None:
            raise twoafc_codecs.CodecError(f"{self.codec}: give a level or a target bpp, not both")
        if self.rate_targeted:
            twoafc_codecs.validate_target_bpp(self.codec, self.target_bpp)
        else:
            twoafc_codecs.validate_setting(self.codec, self.level)
        twoafc_codecs.get_codec(self.codec).check_ready(self.level)

    def clean(self):
        try:
            self.validate()
        except twoafc_codecs.CodecError as error:
            raise ValidationError(str(error)) from None

    def validate_constraints(self, exclude=None):
        # clean() says in words what is missing or doubled; the bare "constraint
        # level_xor_target_bpp is violated" would only repeat it.
        if (self.level is None) == (self.target_bpp is None):
            exclude = {*(exclude or ()), "level"}
        super().validate_constraints(exclude=exclude)


class Encoding(models.Model):
    """One whole-source encode: its bytes are kept so any stimulus can be re-decoded and checked."""

    source = models.ForeignKey(SourceImage, on_delete=models.CASCADE, related_name="encodings")
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="encodings")
    data = models.FileField(upload_to="encodings/")
    level = models.IntegerField(
        help_text="The knob setting used (found by bisection for a target bpp)."
    )
    target_bpp = models.FloatField(null=True, blank=True)
    # For a target bpp: whether the achieved rate is within ±5% of it (else it is the
    # codec's nearest achievable rate), and how many encodes the search took.
    within_tolerance = models.BooleanField(null=True, blank=True)
    search_steps = models.PositiveIntegerField(null=True, blank=True)
    bpp = models.FloatField()
    num_bytes = models.PositiveIntegerField()
    codec_version = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "condition"], name="unique_encoding")
        ]


class ReferencePatch(models.Model):
    source = models.ForeignKey(SourceImage, on_delete=models.CASCADE, related_name="patches")
    y = models.PositiveIntegerField(help_text="Top edge, in the encoded crop's coordinates.")
    x = models.PositiveIntegerField(help_text="Left edge, in the encoded crop's coordinates.")
    image = models.ImageField(upload_to="patches/")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "y", "x"], name="unique_patch_position")
        ]

    def __str__(self) -> str:
        return f"{self.source} @({self.y},{self.x})"


class Stimulus(models.Model):
    """A distorted patch. Codec, level and bpp are copied here so a dataset row stands alone."""

    patch = models.ForeignKey(ReferencePatch, on_delete=models.CASCADE, related_name="stimuli")
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="stimuli")
    encoding = models.ForeignKey(Encoding, on_delete=models.CASCADE, related_name="stimuli")
    image = models.ImageField(upload_to="stimuli/")
    codec = models.CharField(max_length=40)
    level = models.IntegerField()
    target_bpp = models.FloatField(null=True, blank=True)
    bpp = models.FloatField(help_text="Bits per pixel of the whole encode the patch was cut from.")
    codec_version = models.CharField(max_length=200)

    class Meta:
        verbose_name_plural = "stimuli"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["patch", "condition"], name="unique_stimulus")
        ]

    def __str__(self) -> str:
        return f"{self.codec}@{self.level} of patch {self.patch_id}"


SHUFFLE_KEYS = 2**31  # fits every database's integer column


def random_shuffle_key() -> int:
    return random.randrange(SHUFFLE_KEYS)


class Triplet(models.Model):
    """Reference patch plus two of its stimuli: p0 and p1 as in BAPPS."""

    # No single-column indexes on study and p0: the (study, assigned, shuffle) index and
    # the (p0, p1) constraint lead with them. Every hand-out rewrites the row's index
    # entries (``assigned`` is indexed), so each index here costs on every session start.
    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="triplets", db_index=False
    )
    patch = models.ForeignKey(ReferencePatch, on_delete=models.CASCADE, related_name="triplets")
    p0 = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="+", db_index=False)
    p1 = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="+")
    # Trials handed out for this triplet; the assignment engine keeps it below
    # the study's votes_per_triplet under a row lock.
    assigned = models.PositiveIntegerField(default=0)
    # A random order within each ``assigned`` level: the engine reads open triplets from
    # a random point of it, so concurrent raters rarely reach for the same rows and no
    # session start has to sort the whole study.
    shuffle = models.PositiveIntegerField(default=random_shuffle_key, editable=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["p0", "p1"], name="unique_triplet"),
        ]
        indexes = [
            models.Index(fields=["study", "assigned", "shuffle"], name="triplet_open_in_order")
        ]

    def __str__(self) -> str:
        return f"triplet {self.pk}"


class GenerationJob(Job):
    """One generation run (the ``jobs`` life cycle): ``prepare_generation`` claims it and hands
    out chunks (``GenerationChunk``), each chunk adds its sources to ``done``, and the last one
    triplets the stimuli and makes the study ready.

    Only the study's newest job is current: Generate, pressed again, supersedes older ones
    (failed, "superseded by job N"). Their chunks may still write encodings (shared by every
    job of the study, so useful work), but never change their job's or the study's state.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="generation_jobs")
    # Seconds spent, summed over chunks: where generation time goes.
    encode_s = models.FloatField(default=0)
    crop_s = models.FloatField(default=0)
    storage_s = models.FloatField(default=0)
    db_s = models.FloatField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.study} generation: {self.done}/{self.total} {self.status}"

    @classmethod
    def max_attempts(cls) -> None:
        # A generation is many chunk messages: a re-claim only re-sends the unfinished ones,
        # so it is never given up as a whole. A chunk that keeps killing its worker fails
        # the job through its own count (GenerationChunk.attempts).
        return None

    def is_current(self) -> bool:
        """Whether this is still the study's newest job (Generate was not pressed since)."""
        return not GenerationJob.objects.filter(study_id=self.study_id, pk__gt=self.pk).exists()

    def fail(self, error, *, where=None) -> bool:
        """Fail the job; the study is marked failed only if this job is still its current one.

        The job row is updated first: a concurrent Generate, which supersedes running jobs
        before it touches the study, then waits for this transaction and sees the job failed.
        """
        with transaction.atomic():
            failed = super().fail(error, where=where)
            if failed and self.is_current():
                Study.objects.filter(pk=self.study_id).update(status=Study.Status.FAILED)
        return failed


class GenerationChunk(models.Model):
    """One task's share of a generation job: one condition over some sources (one on the CPU
    queue, a batch on the GPU queue). Its job counts it done once, whatever the redeliveries."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="chunks")
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="+")
    source_ids = models.JSONField()
    queue = models.CharField(max_length=8)
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a task started it.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"chunk {self.pk} of job {self.job_id}: condition {self.condition_id} × {self.source_ids}"


class JndPair(models.Model):
    """A pair from an imported BAPPS JND folder (``p0/``, ``p1/``, ``same/``).

    JND pairs have no reference, so they are not triplets and analytics ignore
    them; they are kept with the share of people who saw the two as the same.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="jnd_pairs")
    split = models.CharField(max_length=40)
    category = models.CharField(max_length=80)
    name = models.CharField(max_length=200, help_text="The pair's file stem in the folder.")
    p0 = models.ImageField(upload_to="imports/")
    p1 = models.ImageField(upload_to="imports/")
    same = models.FloatField(help_text="Share of people who answered 'same'.")

    class Meta:
        ordering = ["id"]
        verbose_name = "JND pair"

    def __str__(self) -> str:
        return f"{self.split}/{self.category}/{self.name}"
