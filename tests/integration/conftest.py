"""Real Celery worker processes for the integration tests, on the settings' database and broker."""

import subprocess

import pytest
from django.conf import settings
from django.db import connection

from twoafc import processes
from twoafc.celery import app


def database_url() -> str:
    """The URL of the test database this process is using, for the worker to open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or ""
    auth = f"{user}:{db['PASSWORD']}@" if db["PASSWORD"] else f"{user}@" if user else ""
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


REDIS = settings.CELERY_BROKER_URL.startswith("redis")


def purge_broker() -> None:
    """Nothing left over from an earlier run: queued tasks, nor tasks a killed worker held."""
    app.control.purge()
    if REDIS:
        with app.connection_for_write() as connection:
            connection.default_channel.client.delete("unacked", "unacked_index", "unacked_mutex")


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


@pytest.fixture
def workers(tmp_path):
    if connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"]):
        pytest.skip("an in-memory SQLite test database cannot be shared with a worker process")
    purge_broker()
    started = Workers(tmp_path / "worker.log")
    yield started
    started.stop_all()


@pytest.fixture
def worker(workers):
    return workers.start()
