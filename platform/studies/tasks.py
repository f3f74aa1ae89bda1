"""Celery doors into the generation pipeline: load by id, call a service, retry on failure.

Chunks are idempotent and acknowledged late, so a worker killed mid-chunk
leaves the chunk on the queue and its re-run writes each stimulus once.
Traditional codecs run on the ``cpu`` queue, one source per task; learned
codecs and GPU JPEG run on the ``gpu`` queue, a batch of sources per task.
"""

from celery import shared_task
from django.conf import settings
from django.db import transaction

from . import services

RETRY = {"autoretry_for": (OSError,), "retry_backoff": True, "max_retries": 3}


def _run(task, job_id: int, work) -> bool:
    """Run a pipeline step; a non-transient error fails the job with its message."""
    try:
        work()
    except Exception as error:
        if isinstance(error, OSError) and task.request.retries < task.max_retries:
            raise  # transient: autoretry
        services.fail_generation(job_id, f"{type(error).__name__}: {error}")
        return False
    return True


@shared_task(bind=True, **RETRY)
def prepare_generation(self, job_id: int) -> None:
    chunks = []
    if not _run(self, job_id, lambda: chunks.extend(services.prepare_generation(job_id))):
        return
    if not chunks:
        finish_generation.delay(job_id)
    for chunk in chunks:
        if chunk.queue == "gpu":
            encode_batch.delay(job_id, chunk.condition_id, list(chunk.source_ids))
        else:
            encode_chunk.delay(job_id, chunk.source_ids[0], chunk.condition_id)


def _after_chunk(job_id: int) -> None:
    if services.record_progress(job_id):
        transaction.on_commit(lambda: finish_generation.delay(job_id))


@shared_task(bind=True, **RETRY)
def encode_chunk(self, job_id: int, source_id: int, condition_id: int) -> None:
    if _run(self, job_id, lambda: services.encode_chunk(job_id, source_id, condition_id)):
        _after_chunk(job_id)


@shared_task(bind=True, **RETRY)
def encode_batch(self, job_id: int, condition_id: int, source_ids: list[int]) -> None:
    def work():
        services.require_gpu_or_fallback(settings.TWOAFC_GPU_FALLBACK_CPU)
        services.encode_batch(job_id, condition_id, source_ids)

    if _run(self, job_id, work):
        _after_chunk(job_id)


@shared_task(**RETRY)
def finish_generation(job_id: int) -> None:
    services.finish_generation(job_id)


def enqueue_generation(job_id: int) -> None:
    prepare_generation.delay(job_id)
