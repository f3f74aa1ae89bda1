"""Celery door into snapshot building: claim the snapshot by id, build it (``jobs`` life cycle)."""

from jobs import services as jobs
from jobs.tasks import job_task

from . import services
from .models import Snapshot


@job_task(Snapshot)
def build_snapshot(snapshot: Snapshot) -> None:
    services.write_snapshot(snapshot)


def enqueue_build(snapshot_id: int) -> bool:
    return jobs.send(Snapshot, snapshot_id)
