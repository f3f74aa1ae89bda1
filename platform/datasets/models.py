"""Snapshots of a study's votes, researchers' API tokens, and the download log.

A snapshot ``<study>-v<N>`` freezes the votes cast up to ``vote_cutoff`` (the
largest vote id when it was frozen); its files are written once by a Celery task
into storage under ``snapshots/<name>/`` and never change afterwards. Each file
has a row here (size, sha256), so listings, ranges and tar offsets need no
storage reads.
"""

import hashlib
import secrets

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import models
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.urls import reverse

from jobs.models import Job
from rating.selectors import count_rows
from studies.models import Study


def new_salt() -> str:
    return secrets.token_hex(16)


def _link_token() -> str:
    return secrets.token_urlsafe(24)


class Snapshot(Job):
    """A dataset record and the job that builds its files (the ``jobs`` life cycle)."""

    class Status(models.TextChoices):  # Job.Status's values, with a dataset's words
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Building"
        DONE = "done", "Ready"
        FAILED = "failed", "Failed"

    class Access(models.TextChoices):
        PRIVATE = "private", "Private (staff and its creator)"
        LINK = "link", "Anyone with the link"
        PUBLIC = "public", "Public"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="snapshots")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=100, unique=True)
    # What was frozen: votes with id <= vote_cutoff; rater pseudonyms are keyed by the salt.
    vote_cutoff = models.BigIntegerField(default=0)
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    license = models.CharField(max_length=200, blank=True)
    citation = models.TextField(blank=True)
    access = models.CharField(max_length=8, choices=Access.choices, default=Access.PRIVATE)
    link_token = models.CharField(max_length=64, default=_link_token, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    # What was built.
    content_hash = models.CharField(max_length=64, blank=True, help_text="sha256 of MANIFEST")
    files_count = models.PositiveIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    # rating.selectors.vote_counts at the cutoff, with the raters that counted when it was
    # built: cast, practice, sentinel, repeat, regular, counted, left_out.
    vote_counts = models.JSONField(default=dict, blank=True)
    triplets = models.PositiveIntegerField(default=0, help_text="Triplets with a counted vote.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="unique_snapshot_number")
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("datasets:snapshot", args=[self.name])

    @property
    def storage_prefix(self) -> str:
        return f"snapshots/{self.name}/"

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.DONE

    @property
    def counts(self) -> list[tuple[str, str, str, int | None]]:
        """(key, label, rule, value) of each vote count, in the order pages show them."""
        return count_rows(self.vote_counts)

    @property
    def main_counts(self) -> list[tuple[str, str, str, int | None]]:
        """Cast, regular, counted and left out, for lists."""
        return count_rows(self.vote_counts, main=True)


class SnapshotFile(models.Model):
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=300, help_text="Relative to the snapshot's root.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "path"], name="unique_snapshot_path")
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def storage_name(self) -> str:
        return self.snapshot.storage_prefix + self.path


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A researcher's API token; only its sha256 is stored, the token is shown once."""

    PREFIX = "twoafc_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=16, editable=False, help_text="First characters.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.hint}… ({self.user})"

    @classmethod
    def issue(cls, user, name: str = "") -> tuple["ApiToken", str]:
        """Create a token for ``user``; returns the row and the raw token (not stored)."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, digest=hash_token(raw), hint=raw[: len(cls.PREFIX) + 4]
        )
        return token, raw


class DownloadLog(models.Model):
    class Via(models.TextChoices):
        USER = "user", "Logged-in user"
        TOKEN = "token", "API token"
        LINK = "link", "Link token"
        PUBLIC = "public", "Public"

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="downloads")
    path = models.CharField(max_length=300, help_text="A file's path, or blank for the archive.")
    via = models.CharField(max_length=8, choices=Via.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL)
    ip = models.GenericIPAddressField(null=True, blank=True)
    byte_range = models.CharField(max_length=100, blank=True)
    bytes = models.BigIntegerField(help_text="Bytes the response carries.")
    bytes_sent = models.BigIntegerField(default=0, help_text="Bytes the client took.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.snapshot} {self.path or 'archive'} via {self.via}"


@receiver(pre_delete, sender=Snapshot)
def _delete_snapshot_files(sender, instance: Snapshot, **kwargs) -> None:
    """A deleted snapshot takes its files in storage with it."""
    for path in instance.files.values_list("path", flat=True).iterator():
        default_storage.delete(instance.storage_prefix + path)
