"""Generation in a real Celery worker process, on whichever database and broker the settings name.

With DATABASE_URL and REDIS_URL set (as .ci/run does) this is PostgreSQL and Redis;
without them, the embedded default: an SQLite file and kombu's filesystem broker.
"""

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection

from studies import services, tasks
from studies.models import GenerationJob, Stimulus
from tests.conftest import make_study
from twoafc.celery import app

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def database_url() -> str:
    """The URL of the test database this process is using, for the worker to open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or ""
    auth = f"{user}:{db['PASSWORD']}@" if db["PASSWORD"] else f"{user}@" if user else ""
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(tmp_path):
    if connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"]):
        pytest.skip("an in-memory SQLite test database cannot be shared with a worker process")
    app.control.purge()  # nothing left over from an earlier run
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "TWOAFC_DATA_DIR": str(settings.DATA_DIR),
        "TWOAFC_BROKER_DIR": str(settings.BROKER_DIR),
        "PYTHONPATH": os.pathsep.join(
            [str(settings.BASE_DIR / "platform"), str(settings.BASE_DIR / "codecs")]
        ),
    }
    log = open(tmp_path / "worker.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "twoafc", "worker", "-Q", "cpu", "-c", "2",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.seek(0)
    print(log.read()[-4000:])


def wait_for(job: GenerationJob, worker: subprocess.Popen, timeout_s: float = 180) -> GenerationJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (GenerationJob.Status.DONE, GenerationJob.Status.FAILED):
            return job
        assert worker.poll() is None, "the worker process died"
        time.sleep(0.3)
    raise AssertionError(f"generation still {job.status} ({job.progress}) after {timeout_s} s")


def test_a_worker_process_generates_the_study(worker):
    study = make_study(
        photos=("astronaut", "coffee"), conditions=(("jpeg", 15), ("jpeg2000", 60), ("webp", 40))
    )
    job = services.start_generation(study, enqueue=tasks.enqueue_generation)
    job = wait_for(job, worker)
    assert (job.status, job.done, job.total, job.error) == ("done", 6, 6, "")
    assert Stimulus.objects.filter(patch__source__study=study).count() == 2 * 3 * 3
    assert study.triplets.count() == 2 * 3 * 3
    stimulus = Stimulus.objects.filter(codec="jpeg2000").first()
    assert stimulus.image.storage.exists(stimulus.image.name)  # written by the worker, read here
    assert "OpenJPEG" in stimulus.codec_version
