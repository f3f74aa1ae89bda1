"""Rater sessions, their trials and the votes cast on them.

A vote is keyed twice: by its trial (one vote per trial) and by the id the
client generated, so a retried POST finds the vote it already made.
"""

import hashlib
import hmac
import uuid

from django.conf import settings
from django.db import models

from studies.models import Study, Triplet


def pseudonym(raw_id: str) -> str:
    """A stable, non-reversible rater id for exports (HMAC of the crowd id)."""
    digest = hmac.new(settings.PSEUDONYM_KEY.encode(), raw_id.encode(), hashlib.sha256)
    return "r" + digest.hexdigest()[:12]


class RaterSession(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="sessions")
    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Hash of the crowd id (or of the token for anonymous links); never the raw id.
    rater_hash = models.CharField(max_length=64, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"session {self.token}"

    @property
    def rater(self) -> str:
        return pseudonym(self.rater_hash)

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None


class Trial(models.Model):
    """One triplet shown to one session, with its left/right order fixed when it is handed out."""

    session = models.ForeignKey(RaterSession, on_delete=models.CASCADE, related_name="trials")
    index = models.PositiveIntegerField()
    triplet = models.ForeignKey(Triplet, on_delete=models.CASCADE, related_name="trials")
    # False: p0 on the left, p1 on the right. True: swapped.
    p1_on_left = models.BooleanField()

    class Meta:
        ordering = ["session", "index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "index"], name="unique_trial_index"),
            models.UniqueConstraint(fields=["session", "triplet"], name="triplet_once_per_session"),
        ]

    def stimulus_on(self, side: str):
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
    rt_ms = models.FloatField(
        help_text="From the images being shown to the response (performance.now())."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
