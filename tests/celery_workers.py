"""Real Celery worker processes for tests, on whichever database and broker the settings name.

Shared by the integration tests and the browser journeys (their fixtures are in
tests/conftest.py). With DATABASE_URL and REDIS_URL set (as .ci/run does) the
workers use PostgreSQL and Redis; without them, the embedded default: the test's
SQLite file and kombu's filesystem broker.
"""

import subprocess
import time

import pytest
from django.conf import settings
from django.db import connection

from studies.models import GenerationJob
from twoafc import processes


def database_url() -> str:
    """The URL of the test database this process is using, for the worker to open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or ""
    auth = f"{user}:{db['PASSWORD']}@" if db["PASSWORD"] else f"{user}@" if user else ""
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def redis_broker() -> bool:
    return settings.CELERY_BROKER_URL.startswith("redis")


def purge_broker() -> None:
    """Nothing left over from an earlier run: queued tasks, nor tasks a killed worker held."""
    from twoafc.celery import app

    app.control.purge()
    if redis_broker():
        with app.connection_for_write() as broker:
            broker.default_channel.client.delete("unacked", "unacked_index", "unacked_mutex")


class Workers:
    """Starts real worker processes (each in its own process group) and stops them all."""

    def __init__(self, log_path):
        self.log = open(log_path, "w+")
        self.processes: list[subprocess.Popen] = []

    def start(self, **env: str) -> subprocess.Popen:
        process = processes.start(
            processes.worker_command(loglevel="INFO"),
            env=processes.child_env(
                DATABASE_URL=database_url(),
                TWOAFC_DATA_DIR=str(settings.DATA_DIR),
                TWOAFC_BROKER_DIR=str(settings.BROKER_DIR),
                **env,
            ),
            stdout=self.log,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            processes.stop(process)
        self.log.seek(0)
        print(self.log.read()[-4000:])
        self.log.close()


def start_workers(tmp_path) -> Workers:
    if connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"]):
        pytest.skip("an in-memory SQLite test database cannot be shared with a worker process")
    purge_broker()
    return Workers(tmp_path / "worker.log")


def wait_for(job: GenerationJob, worker: subprocess.Popen, timeout_s: float = 180) -> GenerationJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (GenerationJob.Status.DONE, GenerationJob.Status.FAILED):
            return job
        assert worker.poll() is None, "the worker process died"
        time.sleep(0.3)
    raise AssertionError(f"generation still {job.status} ({job.progress}) after {timeout_s} s")
