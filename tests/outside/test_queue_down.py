"""Freezing a snapshot while Redis (the broker) is down, on a production-like server.

The snapshot is recorded and stays queued; the API answers 503 with the JSON error shape
and the page says so. Once Redis is back, the sweeper sends the job and a worker builds it.
This test runs its own redis-server on a free loopback port, never the shared one.
"""

import json
import subprocess
import time

import pytest
import redis
from django.conf import settings

from datasets.models import ApiToken, Snapshot
from tests.conftest import generate, make_study
from tests.datasets.conftest import vote_all
from tests.outside.conftest import free_port, production_env, start_server
from twoafc import processes

pytestmark = pytest.mark.django_db(transaction=True)


class OwnRedis:
    """A throw-away redis-server that the test stops and starts again on the same port."""

    def __init__(self, folder):
        self.port = free_port()
        self.folder = folder
        self.process = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def children():
    started = []
    yield started
    for process in started:
        processes.stop(process)


def test_freezing_with_the_broker_down_answers_503_and_builds_once_it_is_back(
    own_redis, children, tmp_path, django_user_model, django_capture_on_commit_callbacks
):
    study = make_study(photos=("astronaut",), conditions=(("jpeg", 10), ("webp", 30)))
    generate(study, django_capture_on_commit_callbacks)
    vote_all(study, ("PROLIFIC-AAA", "PROLIFIC-BBB"))
    staff = django_user_model.objects.create_user("staffer", password="pw-staffer-1", is_staff=True)
    _, token = ApiToken.issue(staff)
    queue = {"REDIS_URL": own_redis.url, "TWOAFC_JOB_STALE_S": "2", "TWOAFC_JOB_HEARTBEAT_S": "1"}
    server = start_server(settings.DATA_DIR, tmp_path / "gunicorn.log", **queue)
    children.append(server.process)

    own_redis.stop()
    started = time.monotonic()
    response = server.post(
        f"/api/datasets/studies/{study.slug}/snapshots", json={"license": "CC-BY-4.0"},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert response.status_code == 503, response.text
    assert time.monotonic() - started < 15  # not held until some long broker timeout
    body = response.json()
    assert body["reason"] == "queue-unavailable" and set(body) == {"detail", "reason"}
    assert f"{study.slug}-v1 is recorded but could not be queued" in body["detail"]
    assert response.headers["Retry-After"] == "60"
    first = Snapshot.objects.get(name=f"{study.slug}-v1")
    assert (first.status, first.attempts) == ("queued", 0)
    assert "not sent to datasets.tasks.build_snapshot: the broker is unreachable" in (
        server.log_tail()
    )

    # The page's Freeze button says the same.
    login = server.get("/admin/login/")
    signed_in = server.post(
        "/admin/login/",
        data={"username": "staffer", "password": "pw-staffer-1",
              "csrfmiddlewaretoken": login.cookies["csrftoken"], "next": "/admin/"},
        cookies=login.cookies, headers={"Referer": server.url + "/admin/login/"},
    )  # fmt: skip
    assert signed_in.status_code == 302
    cookies = {**login.cookies.get_dict(), **signed_in.cookies.get_dict()}  # csrf token rotated
    frozen = server.post(
        f"/studies/{study.slug}/freeze/", data={"csrfmiddlewaretoken": cookies["csrftoken"]},
        cookies=cookies, headers={"Referer": server.url + f"/studies/{study.slug}/download/"},
    )  # fmt: skip
    assert frozen.status_code == 302, frozen.text[:500]
    page = server.get(frozen.headers["Location"], cookies={**cookies, **frozen.cookies.get_dict()})
    assert f"Snapshot {study.slug}-v2 is recorded but could not be queued" in page.text
    assert Snapshot.objects.get(name=f"{study.slug}-v2").status == "queued"

    # Redis is back: the sweeper (cron's command) sends both, a worker builds them.
    own_redis.start()
    time.sleep(2.5)  # past the stale time (2 s) since they were recorded
    env = production_env(settings.DATA_DIR, **queue)
    swept = subprocess.run(
        [processes.sys.executable, "manage.py", "sweep_jobs"], cwd=processes.ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    resent = json.loads(swept.stdout.strip().splitlines()[-1])["resent"]
    second = Snapshot.objects.get(name=f"{study.slug}-v2")
    assert set(resent) == {f"snapshot {first.pk}", f"snapshot {second.pk}"}
    log = open(tmp_path / "worker.log", "w+")
    worker = processes.start(processes.worker_command(), env=env, stdout=log)  # --loglevel WARNING
    children.append(worker)
    deadline = time.monotonic() + 120
    while Snapshot.objects.filter(study=study, status="done").count() < 2:
        assert worker.poll() is None, "the worker died"
        assert time.monotonic() < deadline, list(Snapshot.objects.values("name", "status", "error"))
        time.sleep(0.3)
    first.refresh_from_db()
    assert first.files_count > 0 and first.license == "CC-BY-4.0" and first.attempts == 1
    log.seek(0)
    # The job's log lines reach a worker's output at its default log level.
    assert f"snapshot {first.pk} claimed by" in log.read()
