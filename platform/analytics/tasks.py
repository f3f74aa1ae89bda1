"""Celery door into DPL fitting: claim the job by id, run the fit (``cpu`` queue).

The ``jobs`` life cycle makes it idempotent (a finished job is not fitted again, one that
another worker runs is left to it) and keeps state, progress and error in the ``FitJob``
row; ``services.queue_fit`` enqueues it on commit.
"""

from jobs import services as jobs
from jobs.tasks import job_task

from .models import FitJob


@job_task(FitJob)
def fit_dpl(job: FitJob) -> dict:
    # Imported here: the fitting stack loads torch, which a worker only needs once it fits.
    from . import services

    return services.run_fit(job)


def enqueue_fit(job_id: int) -> bool:
    return jobs.send(FitJob, job_id)
