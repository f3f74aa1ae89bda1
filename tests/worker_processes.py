"""Real Celery worker processes for tests, on whichever database and broker the settings name.

With DATABASE_URL and REDIS_URL set this is PostgreSQL and Redis; without them the embedded
default: an SQLite file (the test database is a file, so a worker can open it) and kombu's
filesystem broker. The ``workers`` and ``worker`` fixtures (tests/conftest.py) use these.
"""

import subprocess

from django.conf import settings
from django.db import connection

from twoafc import processes
from twoafc.celery import app

REDIS = settings.CELERY_BROKER_URL.startswith("redis")


def database_url() -> str:
    """The URL of the test database this process is using, for the worker to open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or ""
    auth = f"{user}:{db['PASSWORD']}@" if db["PASSWORD"] else f"{user}@" if user else ""
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def purge_broker() -> None:
    """Nothing left over from an earlier run: queued tasks, nor tasks a killed worker held."""
    app.control.purge()
    if REDIS:
        with app.connection_for_write() as broker:
            broker.default_channel.client.delete("unacked", "unacked_index", "unacked_mutex")


def shareable_database() -> bool:
    """Whether a worker process can open this test database (not an in-memory SQLite one)."""
    return not (
        connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"])
    )


class Workers:
    """Starts real worker processes (each in its own process group) and stops them all.

    A worker reads and writes the test's media folder (``settings.DATA_DIR``, which the
    tests move to a temporary folder) and the test database."""

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
