"""Rater sessions, their trials and the votes cast on them.

A vote is keyed twice: by its trial (one vote per trial; a trial is a session
and an index) and by the id the client generated, so a retried POST finds the
vote it already made.
"""

import hashlib
import hmac
import uuid

from django.conf import settings
from django.db import models

from studies.models import Study, Triplet


def pseudonym(raw_id: str) -> str:
    """A stable, non-reversible rater id for exports (HMAC of the hashed crowd id)."""
    digest = hmac.new(settings.PSEUDONYM_KEY.encode(), raw_id.encode(), hashlib.sha256)
    return "r" + digest.hexdigest()[:12]


class RaterSession(models.Model):
    class Market(models.TextChoices):
        ANONYMOUS = "anonymous", "Anonymous link"
        PROLIFIC = "prolific", "Prolific"
        MTURK = "mturk", "Amazon Mechanical Turk"
        IMPORTED = "imported", "Imported votes (a pseudo rater of datasets.imports)"

    class QualityOverride(models.TextChoices):
        AUTO = "auto", "Follow the flags"
        INCLUDE = "include", "Include despite flags"
        EXCLUDE = "exclude", "Exclude"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="sessions")
    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Hash of the crowd id (or of a random id for anonymous links); never the raw id.
    rater_hash = models.CharField(max_length=64, db_index=True)
    market = models.CharField(max_length=12, choices=Market.choices, default=Market.ANONYMOUS)
    # Market bookkeeping that identifies a submission, not a person.
    market_study_id = models.CharField(max_length=100, blank=True)
    market_session_id = models.CharField(max_length=100, blank=True)
    turk_submit_to = models.URLField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    active_tab = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    screen_w = models.PositiveIntegerField(null=True, blank=True)
    screen_h = models.PositiveIntegerField(null=True, blank=True)
    dpr = models.FloatField(null=True, blank=True, help_text="devicePixelRatio")
    screened_out = models.BooleanField(default=False)
    # Quality control (quality.services.refresh): the measures, the flags, and the admin's call.
    quality = models.JSONField(default=dict, blank=True)
    flags = models.JSONField(default=list, blank=True)
    flagged = models.BooleanField(default=False, db_index=True)
    quality_override = models.CharField(
        max_length=8, choices=QualityOverride.choices, default=QualityOverride.AUTO
    )
    # Not stored: the trials of a session just started, in index order, as the assignment
    # engine laid them out (so its first listing needs no read back).
    laid_out = None

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["study", "rater_hash"], name="one_session_per_rater")
        ]

    def __str__(self) -> str:
        return f"session {self.token}"

    @property
    def rater(self) -> str:
        return pseudonym(self.rater_hash)

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None

    @property
    def excluded(self) -> bool:
        """Whether exports and fits leave this rater out when the study excludes flagged raters."""
        if self.quality_override == self.QualityOverride.AUTO:
            return self.flagged
        return self.quality_override == self.QualityOverride.EXCLUDE


class Trial(models.Model):
    """One thing shown to one session at one index, with its left/right order fixed."""

    class Kind(models.TextChoices):
        PRACTICE = "practice", "Practice (left out of the data)"
        REGULAR = "regular", "Regular"
        SENTINEL = "sentinel", "Sentinel (one side is the reference)"
        # A repeat's original is the session's regular trial of the same triplet.
        REPEAT = "repeat", "Repeat (an earlier trial, sides swapped)"

    # Not indexed on its own: the (session, index) constraint leads with it.
    session = models.ForeignKey(
        RaterSession, on_delete=models.CASCADE, related_name="trials", db_index=False
    )
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.REGULAR)
    triplet = models.ForeignKey(Triplet, on_delete=models.CASCADE, related_name="trials")
    # False: p0 on the left, p1 on the right. True: swapped.
    p1_on_left = models.BooleanField()
    # Sentinels show the reference itself on this side, the triplet's lower-rate stimulus on the other.
    sentinel_side = models.CharField(max_length=5, blank=True)
    # Set when the lease ran out unanswered and the triplet went back to the pool.
    released = models.BooleanField(default=False)

    class Meta:
        ordering = ["session", "index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "index"], name="unique_trial_index"),
            models.UniqueConstraint(
                fields=["session", "triplet"],
                condition=models.Q(kind="regular"),
                name="triplet_once_per_session",
            ),
        ]

    @staticmethod
    def shown(
        kind: str, p1_on_left: bool, sentinel_side: str, p0_bpp: float, p1_bpp: float
    ) -> tuple[str, str]:
        """Which of "ref", "p0", "p1" a trial shows on the left and on the right.

        Sentinels show the reference on ``sentinel_side`` and the triplet's lower-rate
        stimulus on the other side (sentinels are laid out on the session's triplets with the
        lowest rates, ``assignment._sentinel_triplets``, so that side is clearly distorted);
        every other trial shows p0 and p1 in its order.
        """
        if kind == Trial.Kind.SENTINEL:
            other = "p0" if p0_bpp <= p1_bpp else "p1"
            return ("ref", other) if sentinel_side == "left" else (other, "ref")
        return ("p1", "p0") if p1_on_left else ("p0", "p1")

    def image_on(self, side: str):
        """The image field shown on ``side``."""
        triplet = self.triplet
        shown = self.shown(
            self.kind, self.p1_on_left, self.sentinel_side, triplet.p0.bpp, triplet.p1.bpp
        )
        which = shown[0] if side == "left" else shown[1]
        return {"ref": triplet.patch, "p0": triplet.p0, "p1": triplet.p1}[which].image

    def stimulus_on(self, side: str):
        """The stimulus (p0 or p1) on ``side`` for a trial that is not a sentinel."""
        shows_p1 = self.p1_on_left if side == "left" else not self.p1_on_left
        return self.triplet.p1 if shows_p1 else self.triplet.p0


class Vote(models.Model):
    class Side(models.TextChoices):
        LEFT = "left", "Left"
        RIGHT = "right", "Right"

    trial = models.OneToOneField(Trial, on_delete=models.CASCADE, related_name="vote")
    client_id = models.UUIDField(unique=True)
    side = models.CharField(max_length=5, choices=Side.choices)
    chose_p1 = models.BooleanField()
    rt_ms = models.FloatField(help_text="From the images being painted to the response.")
    display_mode = models.CharField(max_length=16, default="side-by-side")
    # The trial's lease had run out when the vote arrived: kept, never lost, but marked.
    late = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    @property
    def correct(self) -> bool | None:
        """For a sentinel: whether the rater picked the reference."""
        if self.trial.kind != Trial.Kind.SENTINEL:
            return None
        return self.side == self.trial.sentinel_side
