"""The generation race (issue #13): a superseded job's chunks and failures must not change the
study, and each job counts only its own chunks.

Before the job system, the old job's last chunk recounted the study's encodings (the new job's
included), reached its total, marked the old job done and the study ready while the new job
still ran; and failing the old job marked the study failed under the new one.
"""

import pytest
import torch

from studies import services, tasks
from studies.models import Condition, Encoding, GenerationJob, Study
from tests.conftest import make_study

pytestmark = pytest.mark.django_db


def press_generate(study) -> GenerationJob:
    """Start a job, its message not sent: the test plays the worker, step by step."""
    job = services.start_generation(study, enqueue=lambda job_id: None)
    assert job.claim()  # what prepare_generation's task does first
    return job


def test_a_superseded_jobs_last_chunk_changes_neither_its_job_nor_the_study(
    eager_celery, django_capture_on_commit_callbacks
):
    study = make_study(photos=("astronaut",), conditions=(("jpeg", 10), ("jpeg", 50)))
    first = press_generate(study)
    old_chunks = services.prepare_generation(first.pk)  # one chunk per condition
    assert len(old_chunks) == 2
    with django_capture_on_commit_callbacks(execute=True):
        tasks.encode_chunk(old_chunks[0].pk)

    second = press_generate(study)  # Generate pressed again while the first job runs
    new_chunks = services.prepare_generation(second.pk)
    assert [c.condition_id for c in new_chunks] == [old_chunks[1].condition_id]

    # The old job's last chunk is delivered now, after the new job started.
    with django_capture_on_commit_callbacks(execute=True):
        tasks.encode_chunk(old_chunks[1].pk)
    first.refresh_from_db()
    second.refresh_from_db()
    study.refresh_from_db()
    assert (first.status, first.error) == ("failed", f"superseded by job {second.pk}")
    assert first.done == 1  # its own first chunk; not the study's two encodings
    assert (second.status, second.done, second.total) == ("running", 1, 2)
    assert study.status == Study.Status.GENERATING and not study.triplets.exists()
    assert Encoding.objects.filter(source__study=study).count() == 2  # its work is kept

    # The new job's chunk finds that encoding, counts itself (once, however often it is
    # delivered) and, being the current job, makes the study ready.
    for _delivery in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.encode_chunk(new_chunks[0].pk)
    second.refresh_from_db()
    study.refresh_from_db()
    assert (second.status, second.done, second.total) == ("done", 2, 2)
    assert study.status == Study.Status.READY and study.triplets.count() == 3
    assert Encoding.objects.filter(source__study=study).count() == 2


def test_failing_a_superseded_job_leaves_the_study_to_the_current_one(eager_celery):
    study = make_study(photos=("astronaut",), conditions=(("jpeg", 10), ("jpeg", 50)))
    first = press_generate(study)
    services.prepare_generation(first.pk)
    second = press_generate(study)
    services.prepare_generation(second.pk)

    assert services.fail_generation(first.pk, "OSError: the old worker's disk is gone") is False
    study.refresh_from_db()
    second.refresh_from_db()
    assert study.status == Study.Status.GENERATING and second.status == "running"

    # The current job failing does mark the study failed.
    assert services.fail_generation(second.pk, "OSError: this one's disk is gone") is True
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a worker without CUDA")
def test_a_superseded_jobs_chunk_failing_for_good_leaves_the_study_alone(
    settings, eager_celery, django_capture_on_commit_callbacks
):
    """A chunk task of the old job that fails (not transiently) touches neither job nor study."""
    settings.TWOAFC_GPU_FALLBACK_CPU = False  # GPU chunks refuse to run on this CPU
    study = make_study(photos=("astronaut",), crop_size=128, patches_per_image=2, conditions=())
    Condition.objects.create(study=study, codec="jpeg", level=30)
    Condition.objects.create(study=study, codec="jpeg-nvjpeg", level=30)
    first = press_generate(study)
    gpu_chunk = next(c for c in services.prepare_generation(first.pk) if c.queue == "gpu")
    second = press_generate(study)
    services.prepare_generation(second.pk)

    with django_capture_on_commit_callbacks(execute=True):
        tasks.encode_batch(gpu_chunk.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    study.refresh_from_db()
    assert first.error == f"superseded by job {second.pk}"
    assert second.status == "running" and study.status == Study.Status.GENERATING
