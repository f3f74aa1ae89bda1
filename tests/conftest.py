"""Shared fixtures: studies built from scikit-image's bundled photos through the real pipeline."""

import io
import os

import numpy as np
import pytest
from django.core.servers import basehttp
from PIL import Image
from skimage import data as skdata

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")

# The live server writes headers and body separately; with Nagle's algorithm on,
# every response then waits out the client's delayed ACK (~40 ms).
basehttp.WSGIRequestHandler.disable_nagle_algorithm = True
# Its listen backlog of 10 resets connections when tests race dozens of clients at it.
basehttp.WSGIServer.request_queue_size = 128


def photo_png(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(getattr(skdata, name)())).save(buffer, format="PNG")
    return buffer.getvalue()


# What makes a test slow: a real process (worker, server, browser) or a marker that needs one;
# every test in tests/outside starts a production server.
SLOW_FIXTURES = {"worker", "workers", "live_server", "production_server", "open_page"}
SLOW_MARKERS = {"browser", "integration"}
SLOW_FOLDERS = {"outside"}


def pytest_collection_modifyitems(items):
    """Mark ``slow`` every test that starts a process, so ``pytest -m "not slow"`` is the
    quick loop (README, "Tests"); tests slow for other reasons carry the marker themselves."""
    for item in items:
        if (
            SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
            or any(item.get_closest_marker(name) for name in SLOW_MARKERS)
            or SLOW_FOLDERS & set(item.path.parts)
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path_factory):
    """Each test writes media and models under its own temporary folder."""
    root = tmp_path_factory.mktemp("data")
    settings.MEDIA_ROOT = str(root / "media")
    settings.DATA_DIR = root


@pytest.fixture
def eager_celery():
    """Run .delay() inline, for unit tests that need no worker process."""
    from twoafc.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = previous


@pytest.fixture
def workers(tmp_path):
    """Real Celery worker processes (``workers.start()``), stopped when the test ends."""
    from tests.celery_workers import start_workers

    started = start_workers(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def worker(workers):
    """One real Celery worker process on both queues."""
    return workers.start()


def make_study(
    *, photos=PHOTOS[:2], conditions=(("jpeg", 10), ("jpeg", 50), ("webp", 30)), **fields
):
    from studies import services
    from studies.models import Condition, Study

    # No practice, sentinel or repeat trials unless a test asks: counts stay easy to read.
    defaults = {"name": "Test study", "patch_size": 64, "patches_per_image": 3, "crop_size": 256,
                "votes_per_triplet": 2, "trials_per_session": 10, "practice_trials": 0,
                "sentinel_rate": 0, "min_sentinels": 0, "repeat_rate": 0,
                "break_every": 0}  # fmt: skip
    study = Study.objects.create(**{**defaults, **fields})
    for photo in photos:
        services.add_source_image(study, photo_png(photo), f"{photo}.png")
    for codec, level in conditions:
        Condition.objects.create(study=study, codec=codec, level=level)
    return study


def generate(study, django_capture_on_commit_callbacks):
    """Run the whole generation pipeline inline (Celery eager mode)."""
    from studies import services, tasks
    from twoafc.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            job = services.start_generation(study, enqueue=tasks.enqueue_generation)
    finally:
        app.conf.task_always_eager = previous
    study.refresh_from_db()
    job.refresh_from_db()
    return job


@pytest.fixture
def ready_study(db, django_capture_on_commit_callbacks):
    """A READY study: 2 photos × 3 patches × 3 conditions = 18 triplets, 10 trials per session,
    after 2 practice trials, with a break every 5."""
    study = make_study(practice_trials=2, break_every=5)
    generate(study, django_capture_on_commit_callbacks)
    assert study.status == study.Status.READY, study.latest_job.error
    return study


os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
