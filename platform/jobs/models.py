"""The life cycle every background job shares: one abstract model, one stale rule.

A job row is the truth about a piece of background work; Celery messages only say "look
at row N". States::

    queued ──claim()──▶ running ──finish()──▶ done
       ▲                  │  └─────fail()───▶ failed ──requeue()──▶ queued
       └────release()─────┘   (a transient error, or the sweeper taking over a dead worker's job)

Every change is one conditional UPDATE (never read-modify-write), so two workers, a
redelivered message and the sweeper can race on a row and exactly one of them wins. A
worker that claimed a job holds it by ``(claimed_by, attempts)``: once the job is taken
over, that worker's progress, finish and fail change nothing.

The stale rule: a running job whose heartbeat is older than ``TWOAFC_JOB_STALE_S`` is
orphaned (its worker died), and a queued job not sent or claimed for that long has
probably lost its message. ``claim()`` takes over the first kind; the sweeper
(``jobs.services.sweep``) re-sends both.
"""

import logging
import os
import socket
import traceback
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.expressions import Combinable
from django.utils import timezone

logger = logging.getLogger("twoafc.jobs")

STATE_FIELDS = [
    "status", "stage", "done", "total", "error", "traceback", "attempts", "claimed_by",
    "heartbeat_at", "queued_at", "started_at", "finished_at",
]  # fmt: skip


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_after() -> timedelta:
    return timedelta(seconds=settings.TWOAFC_JOB_STALE_S)


def describe_error(error: BaseException | str) -> tuple[str, str]:
    """An error as one line ("Type: message", at most 1,000 characters) and its traceback."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(error))
    else:
        message, trace = str(error), ""
    return " ".join(message.split())[:1000], trace


class ClaimLost(Exception):
    """This worker no longer holds the job: it went stale and was taken over, or was superseded."""


class Job(models.Model):
    """Status, progress, error and ownership of one piece of background work (abstract)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    stage = models.CharField(max_length=40, blank=True, help_text="What it is doing now.")
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why it failed, or why it was retried.")
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="How many times it was claimed.")
    claimed_by = models.CharField(max_length=200, blank=True, help_text="host:pid of its worker.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now, help_text="When it was last sent.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # (claimed_by, attempts) once this instance has claimed its row; None on an instance
    # that merely reads the job (a step of a job someone else claimed, the sweeper).
    _claim: tuple[str, int] | None = None

    class Meta:
        abstract = True

    # --- reading ---------------------------------------------------------------------

    @property
    def label(self) -> str:
        """How log lines name the job: "snapshot 12"."""
        return f"{self._meta.verbose_name} {self.pk}"

    @property
    def progress(self) -> str:
        return f"{self.done}/{self.total}"

    @classmethod
    def max_attempts(cls) -> int | None:
        """Claims allowed before the sweeper gives up on a job whose worker keeps dying."""
        return settings.TWOAFC_JOB_MAX_ATTEMPTS

    @classmethod
    def orphaned(cls, now=None) -> Q:
        """Running jobs whose worker stopped beating: the stale rule."""
        cutoff = (now or timezone.now()) - stale_after()
        return Q(status=cls.Status.RUNNING) & (
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
        )

    @classmethod
    def unsent(cls, now=None) -> Q:
        """Queued jobs that nobody sent or claimed within the stale time: a lost message."""
        cutoff = (now or timezone.now()) - stale_after()
        return Q(status=cls.Status.QUEUED, queued_at__lt=cutoff)

    @property
    def is_stale(self) -> bool:
        cutoff = timezone.now() - stale_after()
        if self.status == self.Status.RUNNING:
            return self.heartbeat_at is None or self.heartbeat_at < cutoff
        return self.status == self.Status.QUEUED and self.queued_at < cutoff

    # --- changing (each one conditional UPDATE) -----------------------------------------

    def _held(self, where: Q | None = None) -> models.QuerySet:
        """This running job, and only while this instance's claim (if any) still holds it."""
        rows = type(self).objects.filter(pk=self.pk, status=self.Status.RUNNING)
        if self._claim is not None:
            rows = rows.filter(claimed_by=self._claim[0], attempts=self._claim[1])
        return rows.filter(where) if where is not None else rows

    def _write(self, rows: models.QuerySet, **fields) -> bool:
        if not rows.update(**fields):
            return False
        for name, value in fields.items():
            if not isinstance(value, Combinable):
                setattr(self, name, value)
        return True

    def claim(self, worker: str | None = None) -> bool:
        """Take the job to run it: a queued one, or a running one whose heartbeat is stale.

        Never a done or a failed one (see ``requeue``). Returns False when someone else holds
        it, which is what a redelivered message of a running or finished job should do: nothing.
        """
        worker = worker or worker_name()
        now = timezone.now()
        claimable = Q(status=self.Status.QUEUED) | self.orphaned(now)
        taken = (
            type(self)
            .objects.filter(claimable, pk=self.pk)
            .update(status=self.Status.RUNNING, claimed_by=worker, attempts=F("attempts") + 1,
                    heartbeat_at=now, started_at=now, finished_at=None)
        )  # fmt: skip
        self.refresh_from_db(fields=STATE_FIELDS)
        if not taken:
            holder = f" on {self.claimed_by}" if self.status == self.Status.RUNNING else ""
            logger.info("%s not claimed: it is %s%s", self.label, self.status, holder)
            return False
        # attempts was just incremented by us; another claim could only follow once this one's
        # heartbeat went stale, so the row read back is ours.
        self._claim = (worker, self.attempts)
        logger.info("%s claimed by %s (attempt %d)", self.label, worker, self.attempts)
        return True

    def beat(self) -> bool:
        """Say the job is alive; False once it is no longer running (under this claim)."""
        return self._write(self._held(), heartbeat_at=timezone.now())

    def set_progress(self, done: int, total: int | None = None, stage: str | None = None) -> bool:
        """Record progress (and beat the heart).

        Raises ClaimLost when this instance claimed the job and no longer holds it, so a worker
        that was taken for dead stops; without a claim, returns whether the job is running.
        """
        fields = {"done": done, "heartbeat_at": timezone.now()}
        if total is not None:
            fields["total"] = total
        if stage is not None:
            fields["stage"] = stage
        if self._write(self._held(), **fields):
            return True
        if self._claim is not None:
            raise ClaimLost(f"{self.label} is no longer held by {self._claim[0]}")
        return False

    def finish(self, **fields) -> bool:
        """Mark the job done, with ``fields`` (its results) in the same UPDATE."""
        now = timezone.now()
        if not self._write(
            self._held(), status=self.Status.DONE, finished_at=now, heartbeat_at=now, error="",
            traceback="", **fields,
        ):  # fmt: skip
            logger.info("%s: finished, but no longer running here; nothing recorded", self.label)
            return False
        took = (now - self.started_at).total_seconds() if self.started_at else 0.0
        logger.info("%s done in %.1f s (attempt %d)", self.label, took, self.attempts)
        return True

    def fail(self, error: BaseException | str, *, where: Q | None = None) -> bool:
        """Mark the running job failed with the error's one-line message and its traceback."""
        message, trace = describe_error(error)
        if not self._write(
            self._held(where), status=self.Status.FAILED, error=message, traceback=trace,
            finished_at=timezone.now(),
        ):  # fmt: skip
            return False
        logger.error(
            "%s failed: %s",
            self.label,
            message,
            exc_info=error if isinstance(error, BaseException) else None,
        )
        return True

    def release(self, error: BaseException | str, *, where: Q | None = None) -> bool:
        """Put the running job back to queued (to be retried), noting why."""
        message, trace = describe_error(error)
        if not self._write(
            self._held(where), status=self.Status.QUEUED, claimed_by="", heartbeat_at=None,
            queued_at=timezone.now(), error=message, traceback=trace,
        ):  # fmt: skip
            return False
        self._claim = None
        return True

    def requeue(self) -> bool:
        """Run a failed job again, from a clean slate (attempts start over)."""
        if not self._write(
            type(self).objects.filter(pk=self.pk, status=self.Status.FAILED),
            status=self.Status.QUEUED, attempts=0, error="", traceback="", claimed_by="",
            heartbeat_at=None, queued_at=timezone.now(), finished_at=None,
        ):  # fmt: skip
            return False
        logger.info("%s requeued", self.label)
        return True
