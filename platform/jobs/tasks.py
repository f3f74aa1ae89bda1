"""Celery doors for jobs: one wrapper for tasks that run a job, one for steps of a job, the sweeper.

A task takes a job's id, claims the row (so a redelivered message of a job that runs or is
done does nothing), runs its body under a heartbeat, and applies the one retry policy
(``jobs.policy``): a transient error puts the job back to queued and retries with backoff,
anything else fails it with its message and traceback. Messages are acknowledged late
(settings), so a worker killed mid-task leaves its message to be delivered again.
"""

import logging
from collections.abc import Callable

from celery import shared_task
from celery.exceptions import Retry

from . import policy, services
from .heartbeat import Heartbeat
from .models import Job

logger = logging.getLogger("twoafc.jobs")


def _retry(task, error: BaseException, delay: float) -> None:
    """Schedule the task again in ``delay`` seconds (raises Celery's Retry when it was sent)."""
    try:
        raise task.retry(exc=error, countdown=delay, max_retries=None)
    except Retry:
        raise
    except Exception as send_error:
        if send_error is error:  # called outside a worker (directly): nothing to schedule
            raise
        logger.warning("retry of %s not sent (%s); the sweeper sends it", task.name, send_error)


def job_task(model: type[Job], *, finishes: bool = True, **options):
    """Make ``body(job) -> dict | None`` the Celery task ``task(job_id)`` that runs ``model`` jobs.

    The task is named after the body (``datasets.tasks.build_snapshot``), so the routes in
    settings apply to it, and becomes the one the sweeper sends for ``model``. With
    ``finishes`` the job is marked done with the fields the body returns.
    """

    def decorate(body: Callable[[Job], dict | None]):
        def task(self, job_id: int) -> None:
            job = model.objects.filter(pk=job_id).first()
            if job is None:
                logger.info("%s %s no longer exists; nothing to do", model._meta.verbose_name,
                            job_id)  # fmt: skip
                return
            services.run(
                job, body, finishes=finishes, reraise=False,
                retry=lambda error, delay: _retry(self, error, delay),
            )  # fmt: skip

        task.__doc__ = body.__doc__
        # Retries are counted by the job (attempts), not by Celery.
        options.setdefault("max_retries", None)
        name = f"{body.__module__}.{body.__name__}"
        registered = shared_task(bind=True, name=name, **options)(task)
        services.register(model, registered)
        return registered

    return decorate


def run_step(task, job: Job, body: Callable[[], object], *, attempt: int, what: str) -> bool:
    """Run one step of a job that another task claimed (a chunk of a generation).

    The step beats the job's heartbeat while it runs. A transient error is retried with
    backoff until ``attempt`` (this step's own count) reaches the limit; anything else fails
    the job, if it is still running. Returns True when the step succeeded. The step's task
    must be declared with ``max_retries=None``: ``attempt`` is the count that matters.
    """
    try:
        with Heartbeat(job):
            body()
    except Exception as error:
        if policy.is_transient(error) and attempt < policy.max_attempts():
            delay = policy.backoff_s(attempt)
            logger.warning(
                "%s: %s, attempt %d, failed with %s: %s; retrying in %.0f s",
                job.label, what, attempt, type(error).__name__, error, delay,
            )  # fmt: skip
            _retry(task, error, delay)
            return False
        if not job.fail(error):
            logger.info(
                "%s: %s failed (%s), but the job is no longer running; left as it is",
                job.label, what, error,
            )  # fmt: skip
        return False
    return True


@shared_task(name="jobs.tasks.sweep")
def sweep() -> dict[str, list[str]]:
    """Run by celery beat every TWOAFC_JOB_SWEEP_S seconds (see settings)."""
    return services.sweep()
