"""Celery door into DPL fitting: load the job by id, run the service (``cpu`` queue).

The task is idempotent (a finished job is not fitted again) and keeps its state, progress
and error in the ``FitJob`` row; ``services.queue_fit`` enqueues it on commit.
"""

from celery import shared_task


@shared_task
def fit_dpl(job_id: int) -> None:
    # Imported here: the fitting stack loads torch, which a worker only needs once it fits.
    from . import services

    services.run_fit_job(job_id)


def enqueue_fit(job_id: int) -> None:
    fit_dpl.delay(job_id)
