"""Running, enqueuing and sweeping jobs of every kind.

Each job model has one Celery task that claims and runs it; ``jobs.tasks.job_task``
registers the pair here, so the sweeper can re-send any job without knowing its app.
"""

import logging
from collections.abc import Callable

from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from . import policy
from .heartbeat import Heartbeat
from .models import ClaimLost, Job

logger = logging.getLogger("twoafc.jobs")

# Job model → the task that claims and runs one (anything with ``.delay(job_id)`` and ``.name``).
_TASKS: dict[type[Job], object] = {}


def register(model: type[Job], task) -> None:
    _TASKS[model] = task


# --- enqueuing ------------------------------------------------------------------------

# What a page or the API says when a job was recorded but the broker could not be reached.
QUEUE_DOWN = (
    "{what} is recorded but could not be queued: the task queue is unreachable. It stays "
    "queued, and the job sweeper sends it once the queue is back."
)


def send(model: type[Job], job_id: int) -> bool:
    """Hand job ``job_id`` to the workers. False, with a log line, if the broker is unreachable:
    the row stays queued and the sweeper sends it once the broker is back."""
    task = _TASKS[model]
    label = f"{model._meta.verbose_name} {job_id}"
    # Logged before sending: an eager run (tests, demo) logs the job's own lines inside delay().
    logger.info("%s: sending to %s", label, task.name)
    try:
        task.delay(job_id)
    except Exception as error:
        if policy.is_transient(error):
            logger.warning(
                "%s not sent to %s: the broker is unreachable (%s); it stays queued and the "
                "sweeper sends it again", label, task.name, error,
            )  # fmt: skip
        else:
            logger.error("%s not sent to %s", label, task.name, exc_info=error)
        return False
    return True


def enqueue_on_commit(job: Job, enqueue: Callable[[int], object] | None = None) -> None:
    """Send ``job`` once the transaction that recorded it commits (never before: a worker must
    find the row). Afterwards ``job.enqueued`` is True, or False when it could not be sent;
    nothing raises out of the commit hook. ``enqueue(job_id)`` replaces the registered task
    (tests and services pass their own); it may return False to say it failed.
    """
    job.enqueued = None

    def hook() -> None:
        if enqueue is None:
            job.enqueued = send(type(job), job.pk)
            return
        try:
            job.enqueued = enqueue(job.pk) is not False
        except Exception as error:
            logger.error("%s not sent", job.label, exc_info=error)
            job.enqueued = False

    transaction.on_commit(hook)


# --- running ----------------------------------------------------------------------------


def run(
    job: Job,
    body: Callable[[Job], dict | None],
    *,
    finishes: bool = True,
    retry: Callable[[BaseException, float], None] | None = None,
    reraise: bool = True,
) -> bool:
    """Claim ``job``, run ``body(job)`` under a heartbeat, and record how it ended.

    Returns False, doing nothing, when the job cannot be claimed (done, failed, or running
    elsewhere with a fresh heartbeat). If ``finishes``, the job is marked done with the
    fields ``body`` returns, unless the body did so itself (to commit its results and the
    state together); a body that hands the work on, like generation's, passes False. A transient error (``policy.is_transient``) with attempts left puts the
    job back to queued and calls ``retry(error, delay_s)``, which schedules the next attempt
    (a Celery task's retry raises). Any other error fails the job with its message and
    traceback, and is raised again if ``reraise``.
    """
    if not job.claim():
        return False
    try:
        with Heartbeat(job):
            fields = body(job)
    except ClaimLost as lost:
        logger.warning("%s: stopped, %s", job.label, lost)
        return False
    except Exception as error:
        limit = type(job).max_attempts()
        attempts_left = limit is None or job.attempts < limit
        if retry is not None and policy.is_transient(error) and attempts_left:
            delay = policy.backoff_s(job.attempts)
            _release_for_retry(job, error, delay)
            retry(error, delay)
            return False
        job.fail(error)
        if reraise:
            raise
        return False
    if finishes and job.status == job.Status.RUNNING:  # unless the body finished it itself
        job.finish(**(fields or {}))
    return True


def _release_for_retry(job: Job, error: BaseException, delay: float) -> None:
    try:
        job.release(error)
    except DatabaseError as db_error:  # the database itself is away: the stale rule takes over
        logger.warning("%s: could not put it back to queued (%s)", job.label, db_error)
    logger.warning(
        "%s: attempt %d failed with %s: %s; retrying in %.0f s",
        job.label, job.attempts, type(error).__name__, error, delay,
    )  # fmt: skip


# --- the sweeper ------------------------------------------------------------------------


def sweep(now=None) -> dict[str, list[str]]:
    """Re-send lost jobs of every kind; give up on those whose workers keep dying.

    - a running job whose heartbeat is stale (its worker died): back to queued and sent
      again, or failed once it was claimed ``max_attempts`` times;
    - a queued job not sent or claimed within the stale time (its message was lost, or the
      broker was down when it was recorded): sent again.

    Every change is conditional on the row still being what the sweeper saw, so sweepers may
    overlap, and a re-sent message of a job that meanwhile runs does nothing (the claim).
    Returns the labels of the jobs it re-sent, re-queued and failed.
    """
    autodiscover_modules("tasks")  # every app's job task registers itself on import
    now = now or timezone.now()
    report: dict[str, list[str]] = {"requeued": [], "resent": [], "failed": []}
    for model in list(_TASKS):
        for job in model.objects.filter(model.orphaned(now)):
            stale = model.orphaned(now)
            holder = job.claimed_by or "its worker"
            since = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if job.heartbeat_at else "ever"
            limit = model.max_attempts()
            if limit is not None and job.attempts >= limit:
                reason = (
                    f"given up after {job.attempts} attempts: the worker running it ({holder}) "
                    f"stopped without finishing each time (no heartbeat since {since})"
                )
                if job.fail(reason, where=stale):
                    report["failed"].append(job.label)
                continue
            reason = f"{holder} stopped (no heartbeat since {since}); queued again"
            if job.release(reason, where=stale):
                logger.warning("%s: %s", job.label, reason)
                report["requeued"].append(job.label)
                send(model, job.pk)
        for job in model.objects.filter(model.unsent(now)):
            # Bump queued_at first: only one sweeper re-sends it, once per stale time.
            if model.objects.filter(pk=job.pk, status=job.status, queued_at=job.queued_at).update(
                queued_at=now
            ):
                logger.warning("%s: queued since %s and not taken; sent again", job.label,
                               f"{job.queued_at:%Y-%m-%d %H:%M:%S} UTC")  # fmt: skip
                report["resent"].append(job.label)
                send(model, job.pk)
    return report
