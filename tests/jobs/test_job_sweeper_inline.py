"""The sweeper, in-process (Celery eager): lost messages are sent again, dead workers' jobs are
queued again, and a job whose workers keep dying is given up with a clear error. The same
with real worker processes, SIGKILL included, is in tests/integration/test_job_sweeper.py."""

import json
import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from datasets.models import Snapshot
from jobs import services as jobs
from studies import services, tasks
from studies.models import GenerationJob, Study
from tests.conftest import make_study

pytestmark = pytest.mark.django_db


def long_ago(seconds: float = 3600):
    return timezone.now() - timedelta(seconds=seconds)


def test_a_queued_job_whose_message_was_lost_is_sent_again_and_completes(
    eager_celery, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.INFO, logger="twoafc.jobs")
    study = make_study(photos=("astronaut",), conditions=(("jpeg", 10), ("webp", 30)))
    with django_capture_on_commit_callbacks(execute=True):
        job = services.start_generation(study, enqueue=lambda job_id: None)  # message lost
    assert jobs.sweep()["resent"] == []  # not stale yet: it may just be waiting in the queue
    GenerationJob.objects.filter(pk=job.pk).update(queued_at=long_ago())
    with django_capture_on_commit_callbacks(execute=True):
        report = jobs.sweep()
    assert report["resent"] == [f"generation job {job.pk}"]
    job.refresh_from_db()
    study.refresh_from_db()
    assert (job.status, job.done, job.total, job.attempts) == ("done", 2, 2, 1)
    assert study.status == Study.Status.READY and study.triplets.count() == 3
    assert any("and not taken; sent again" in r.getMessage() for r in caplog.records)


def test_a_running_job_of_a_dead_worker_is_queued_again_and_completes(
    eager_celery, django_capture_on_commit_callbacks
):
    study = make_study(photos=("astronaut",), conditions=(("jpeg", 10), ("webp", 30)))
    job = services.start_generation(study, enqueue=lambda job_id: None)
    assert job.claim(worker="dead-host:41")
    chunks = services.prepare_generation(job.pk)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.encode_chunk(chunks[0].pk)  # one chunk done, then the worker died
    GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=long_ago())
    with django_capture_on_commit_callbacks(execute=True):
        report = jobs.sweep()
    assert report["requeued"] == [f"generation job {job.pk}"]
    job.refresh_from_db()
    assert (job.status, job.done, job.total, job.attempts) == ("done", 2, 2, 2)
    assert job.claimed_by != "dead-host:41"
    # The replaced chunk's message, delivered late, does nothing.
    tasks.encode_chunk(chunks[1].pk)
    job.refresh_from_db()
    assert (job.status, job.done) == ("done", 2)


def test_a_job_whose_workers_keep_dying_is_failed_with_the_reason(settings):
    settings.TWOAFC_JOB_MAX_ATTEMPTS = 3
    study = Study.objects.create(name="s")
    snapshot = Snapshot.objects.create(
        study=study, number=1, name="s-v1", status="running", attempts=3,
        claimed_by="oom-host:9", heartbeat_at=long_ago(),
    )  # fmt: skip
    fine = Snapshot.objects.create(
        study=study, number=2, name="s-v2", status="running", attempts=1,
        claimed_by="alive-host:3", heartbeat_at=timezone.now(),
    )  # fmt: skip
    assert jobs.sweep()["failed"] == [f"snapshot {snapshot.pk}"]
    snapshot.refresh_from_db()
    assert snapshot.status == "failed"
    assert snapshot.error.startswith(
        "given up after 3 attempts: the worker running it (oom-host:9) stopped without finishing"
    )
    fine.refresh_from_db()
    assert (fine.status, fine.claimed_by) == ("running", "alive-host:3")


def test_the_command_sweeps_for_cron(capsys):
    call_command("sweep_jobs")
    assert json.loads(capsys.readouterr().out) == {"requeued": [], "resent": [], "failed": []}


def test_celery_beat_runs_the_sweeper_task():
    from django.utils.module_loading import autodiscover_modules

    from twoafc.celery import app

    autodiscover_modules("tasks")
    entry = app.conf.beat_schedule["sweep-jobs"]
    assert entry["task"] == "jobs.tasks.sweep" and entry["task"] in app.tasks
    assert app.conf.task_routes["jobs.tasks.*"] == {"queue": "cpu"}
