"""The app as production runs it, for requests sent from outside.

``production_server`` starts gunicorn from this checkout with ``DEBUG=0``, a secret key of its
own and the test database this pytest process made (PostgreSQL under ``.ci/run``, else the
SQLite file), and answers with a ``Server`` whose ``url`` any HTTP client can reach. Tests
that use it are transactional (``django_db(transaction=True)``): what they write is committed,
so the server's own processes see it.
"""

import socket
import time
from collections.abc import Iterator

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.celery_workers import database_url
from twoafc import processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A running gunicorn: its base ``url``, the environment it runs under and its log."""

    def __init__(self, url: str, env: dict[str, str], process, log):
        self.url = url
        self.env = env
        self.process = process
        self.log = log

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, allow_redirects=False, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=30, allow_redirects=False, **kwargs)

    def log_tail(self, chars: int = 4000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:]


def production_env(data_dir, **overrides: str) -> dict[str, str]:
    """What a production process gets: DEBUG off, its own secret key, this test database."""
    return processes.child_env(
        DEBUG="0",
        SECRET_KEY="outside-tests-" + "k" * 50,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url(),
        TWOAFC_DATA_DIR=str(data_dir),
        TWOAFC_BROKER_DIR=str(settings.BROKER_DIR),
        **overrides,
    )


def start_server(data_dir, log_path, **env: str) -> Server:
    port = free_port()
    log = open(log_path, "w+")
    process = processes.start(
        processes.serve_command(port, workers=2, threads=2), env=production_env(data_dir, **env),
        stdout=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read()[-4000:]}")
        try:
            requests.get(url + "/favicon.ico", timeout=10)
            return Server(url, dict(env), process, log)
        # Refused until gunicorn listens; a first answer can take seconds on a loaded machine.
        # Any other way of not answering also ends in stop() below, never a leaked server.
        except requests.RequestException:
            time.sleep(0.2)
    processes.stop(process)
    raise RuntimeError(f"gunicorn did not answer on {url} within 60 s")


@pytest.fixture(scope="module")
def production_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Server]:
    """gunicorn with production settings on a free loopback port, for this test module."""
    if connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"]):
        pytest.skip("an in-memory SQLite test database cannot be shared with gunicorn")
    data_dir = tmp_path_factory.mktemp("production")
    with django_db_blocker.unblock():
        server = start_server(data_dir, data_dir / "gunicorn.log")
    try:
        yield server
    finally:
        processes.stop(server.process)
        server.log.close()
