"""The sweeper with real worker processes: a job whose message was lost is sent again and
built; a generation whose worker was SIGKILLed is taken over once its heartbeat is stale
(short stale and heartbeat times, here and in the workers' environment)."""

import io
import os
import signal
import time
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from PIL import Image

from datasets import services as datasets
from datasets.models import Snapshot
from jobs import services as jobs
from studies import services, tasks
from studies.models import Encoding, GenerationChunk, Stimulus
from tests.conftest import generate, make_study
from tests.datasets.conftest import vote_all

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SHORT = {"TWOAFC_JOB_STALE_S": "3", "TWOAFC_JOB_HEARTBEAT_S": "1"}


@pytest.fixture
def short_stale_time(settings):
    settings.TWOAFC_JOB_STALE_S = 3
    settings.TWOAFC_JOB_HEARTBEAT_S = 1


def test_a_snapshot_whose_message_was_lost_is_sent_again_and_built(
    workers, short_stale_time, django_capture_on_commit_callbacks
):
    study = make_study(photos=("astronaut",), conditions=(("jpeg", 10), ("webp", 30)))
    generate(study, django_capture_on_commit_callbacks)
    vote_all(study, ("PROLIFIC-AAA",))
    snapshot = datasets.freeze(study, enqueue=lambda snapshot_id: None)  # the message is lost
    worker = workers.start(**SHORT)
    Snapshot.objects.filter(pk=snapshot.pk).update(queued_at=timezone.now() - timedelta(seconds=10))
    assert jobs.sweep()["resent"] == [f"snapshot {snapshot.pk}"]
    deadline = time.monotonic() + 120
    while snapshot.status != "done":
        assert time.monotonic() < deadline, f"snapshot still {snapshot.status}: {snapshot.error}"
        assert worker.poll() is None, "the worker process died"
        time.sleep(0.3)
        snapshot.refresh_from_db()
    assert snapshot.files_count > 0 and snapshot.attempts == 1 and snapshot.error == ""


def noise_png(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_a_generation_whose_worker_was_killed_is_taken_over_after_the_stale_time(
    workers, short_stale_time, caplog
):
    study = make_study(photos=("astronaut",), crop_size=None, patches_per_image=2, conditions=())
    # Noise at a target bitrate: a chunk of several seconds (bisection over whole encodes),
    # so the kill surely lands in it.
    noise = services.add_source_image(study, noise_png(1200), "noise.png")
    slow = study.conditions.create(codec="jpeg2000", target_bpp=0.3)
    study.conditions.create(codec="webp", level=30)
    first = workers.start(**SHORT)
    job = services.start_generation(study, enqueue=tasks.enqueue_generation)
    deadline = time.monotonic() + 120
    while not GenerationChunk.objects.filter(
        job=job, condition=slow, source_ids=[noise.pk], attempts=1, finished_at=None
    ).exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the main process and its pool, mid-chunk
    first.wait()
    job.refresh_from_db()
    first_holder = job.claimed_by
    assert job.status == "running" and job.attempts == 1 and job.done < job.total == 4
    assert not Encoding.objects.filter(source=noise, condition=slow).exists()

    # The chunk the killed worker held is lost: kombu's filesystem broker has no
    # acknowledgements, and Redis gives it back only after its visibility timeout (600 s).
    # A new worker runs the messages that are left; the job stalls until the sweeper, once
    # its heartbeat is stale, takes it over and sends the missing chunk again.
    second = workers.start(**SHORT)
    deadline = time.monotonic() + 240
    requeued = []
    while job.status not in ("done", "failed"):
        assert time.monotonic() < deadline, f"generation still {job.status} ({job.progress})"
        assert second.poll() is None, "the worker process died"
        requeued += jobs.sweep()["requeued"]
        time.sleep(0.5)
        job.refresh_from_db()
    assert (job.status, job.done, job.total, job.error) == ("done", 4, 4, "")
    assert requeued == [f"generation job {job.pk}"] and job.attempts == 2
    assert job.claimed_by != first_holder
    assert any(
        r.getMessage().startswith(f"generation job {job.pk}: {first_holder} stopped (no heartbeat")
        for r in caplog.records
    )
    pairs = list(
        Stimulus.objects.filter(patch__source__study=study).values_list("patch_id", "condition_id")
    )
    assert len(pairs) == len(set(pairs)) == 2 * 2 * 2  # each (patch, condition) exactly once
    assert study.triplets.count() == 2 * 2
