"""Celery doors into the generation pipeline: load by id, call a service, retry on failure.

Chunks are idempotent and acknowledged late, so a worker killed mid-chunk
leaves the chunk on the queue and its re-run writes each stimulus once.
"""

from celery import shared_task
from django.db import transaction

from . import services

RETRY = {"autoretry_for": (OSError,), "retry_backoff": True, "max_retries": 3}


@shared_task(bind=True, **RETRY)
def prepare_generation(self, job_id: int) -> None:
    try:
        chunks = services.prepare_generation(job_id)
    except Exception as error:
        if isinstance(error, OSError) and self.request.retries < self.max_retries:
            raise
        services.fail_generation(job_id, f"{type(error).__name__}: {error}")
        return
    if not chunks:
        finish_generation.delay(job_id)
    for source_id, condition_id in chunks:
        encode_chunk.delay(job_id, source_id, condition_id)


@shared_task(bind=True, **RETRY)
def encode_chunk(self, job_id: int, source_id: int, condition_id: int) -> None:
    try:
        services.encode_chunk(job_id, source_id, condition_id)
    except Exception as error:
        if isinstance(error, OSError) and self.request.retries < self.max_retries:
            raise
        services.fail_generation(job_id, f"{type(error).__name__}: {error}")
        return
    if services.record_progress(job_id):
        transaction.on_commit(lambda: finish_generation.delay(job_id))


@shared_task(**RETRY)
def finish_generation(job_id: int) -> None:
    services.finish_generation(job_id)


def enqueue_generation(job_id: int) -> None:
    prepare_generation.delay(job_id)
