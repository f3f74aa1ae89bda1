"""Celery doors into the generation pipeline (the ``jobs`` life cycle, fanned out in chunks).

``prepare_generation`` claims the job, records its chunks and sends one task per chunk;
each chunk task beats the job's heartbeat while it encodes, counts itself towards its job
once, and the last one sends ``finish_generation``. Tasks take ids, are idempotent and
acknowledged late, so a worker killed mid-chunk leaves the chunk to be delivered again,
and its re-run writes each stimulus once. Traditional codecs run on the ``cpu`` queue, one
source per task; learned codecs and GPU JPEG on the ``gpu`` queue, a batch per task.
"""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, transaction

from jobs import policy
from jobs import services as jobs
from jobs.tasks import job_task, run_step

from . import services
from .models import GenerationChunk, GenerationJob


@job_task(GenerationJob, finishes=False)
def prepare_generation(job: GenerationJob) -> None:
    chunks = services.prepare_generation(job.pk)
    if not chunks:
        finish_generation.delay(job.pk)
    for chunk in chunks:
        (encode_batch if chunk.queue == "gpu" else encode_chunk).delay(chunk.pk)


def _run_chunk(task, chunk_id: int, work) -> None:
    try:
        chunk = services.start_chunk(chunk_id)
    except DatabaseError as error:
        # Not even counted: deliver the message again later, a few times (then the sweeper
        # takes the stalled job over and sends its unfinished chunks again).
        if not policy.is_transient(error) or task.request.retries + 1 >= policy.max_attempts():
            raise
        raise task.retry(exc=error, countdown=policy.backoff_s(task.request.retries + 1)) from None
    if chunk is None:
        return

    def step() -> None:
        work(chunk)
        if services.complete_chunk(chunk.pk):
            transaction.on_commit(lambda: finish_generation.delay(chunk.job_id))

    what = f"chunk {chunk.pk} ({chunk.condition} × {len(chunk.source_ids)} sources)"
    run_step(task, chunk.job, step, attempt=chunk.attempts, what=what)


@shared_task(bind=True, max_retries=None)
def encode_chunk(self, chunk_id: int) -> None:
    def work(chunk: GenerationChunk) -> None:
        services.encode_chunk(chunk.job_id, chunk.source_ids[0], chunk.condition_id)

    _run_chunk(self, chunk_id, work)


@shared_task(bind=True, max_retries=None)
def encode_batch(self, chunk_id: int) -> None:
    def work(chunk: GenerationChunk) -> None:
        services.require_gpu_or_fallback(settings.TWOAFC_GPU_FALLBACK_CPU)
        services.encode_batch(chunk.job_id, chunk.condition_id, chunk.source_ids)

    _run_chunk(self, chunk_id, work)


@shared_task(bind=True, max_retries=None)
def finish_generation(self, job_id: int) -> None:
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is not None:
        run_step(
            self, job, lambda: services.finish_generation(job_id),
            attempt=self.request.retries + 1, what="triplets",
        )  # fmt: skip


def enqueue_generation(job_id: int) -> bool:
    return jobs.send(GenerationJob, job_id)
