"""Celery door into snapshot building: load by id, build, record a failure in the row."""

from celery import shared_task

from . import services


@shared_task(bind=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def build_snapshot(self, snapshot_id: int) -> None:
    try:
        services.build_snapshot(snapshot_id)
    except Exception as error:
        transient = isinstance(error, OSError) and not isinstance(error, FileNotFoundError)
        if transient and self.request.retries < self.max_retries:
            raise  # storage hiccup: autoretry rebuilds from the same cutoff
        services.fail_snapshot(snapshot_id, f"{type(error).__name__}: {error}")


def enqueue_build(snapshot_id: int) -> None:
    build_snapshot.delay(snapshot_id)
