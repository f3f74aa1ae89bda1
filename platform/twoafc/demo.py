"""The demo: a complete study on the embedded default, from photos to a fitted metric.

Every step reuses what an earlier run left: the study, its stimuli and its votes.
Generation runs in a real Celery worker process over kombu's filesystem broker;
votes come from bots that rate through the HTTP API.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model

from datasets.services import export_bapps
from rating.selectors import vote_counts
from studies import services, tasks
from studies.models import Condition, GenerationJob, Study

from . import processes

DEMO_SLUG = "demo"
DEMO_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera",
    "hubble_deep_field", "immunohistochemistry", "retina",
)  # fmt: skip
DEMO_CONDITIONS = (("jpeg", 10), ("jpeg", 40), ("jpeg2000", 80), ("webp", 10), ("webp", 50))
ADMIN_USER = "admin"
# Bots cast this many votes in all; the rest of the study's 1,440 trials stay open for
# whoever tries the rater page.
BOT_VOTES = 1200


def admin_password() -> str:
    return os.environ.get("TWOAFC_ADMIN_PASSWORD", "twoafc-demo")


def ensure_admin() -> None:
    users = get_user_model()
    user = users.objects.filter(username=ADMIN_USER).first() or users(username=ADMIN_USER)
    user.is_staff = user.is_superuser = True
    user.set_password(admin_password())
    user.save()


def ensure_study() -> Study:
    """The demo study with its photos and conditions (created once)."""
    from skimage import data as skdata  # deferred: heavy, and only the first run needs it

    study, created = Study.objects.get_or_create(
        slug=DEMO_SLUG,
        defaults={
            "name": "Demo: JPEG, JPEG 2000 and WebP on scikit-image photos",
            "patch_size": 64,
            "patches_per_image": 6,
            "crop_size": 256,
            "votes_per_triplet": 3,
            "trials_per_session": 20,
        },
    )
    if created:
        for photo in DEMO_PHOTOS:
            pixels = np.asarray(getattr(skdata, photo)())
            services.add_source_image(study, services.png_bytes(pixels), f"{photo}.png")
        for codec, level in DEMO_CONDITIONS:
            Condition.objects.create(study=study, codec=codec, level=level)
    return study


def bot_sessions_needed(study: Study) -> int:
    missing = BOT_VOTES - vote_counts(study)["cast"]
    return max(0, -(-missing // study.trials_per_session))


def start_worker() -> subprocess.Popen:
    # The worker's chatter goes to stderr: stdout ends with the demo's JSON line.
    return processes.start(processes.worker_command(), stdout=sys.stderr)


def generate(study: Study, worker: subprocess.Popen, timeout_s: float = 900) -> GenerationJob:
    """Run generation on the worker (unless it finished before) and wait for it."""
    job = study.latest_job
    if job is None or job.status != GenerationJob.Status.DONE:
        job = services.start_generation(study, enqueue=tasks.enqueue_generation)
    deadline = time.monotonic() + timeout_s
    while True:
        job.refresh_from_db()
        if job.status in (GenerationJob.Status.DONE, GenerationJob.Status.FAILED):
            return job
        if worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited with code {worker.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"generation did not finish in {timeout_s:.0f} s ({job.progress} chunks)"
            )
        time.sleep(0.5)


def export_dir() -> Path:
    return Path(settings.DATA_DIR) / "exports" / f"{DEMO_SLUG}-bapps"


def fresh_export(study: Study) -> Path:
    """Re-export on every run, so the export holds every vote so far."""
    out = export_dir()
    shutil.rmtree(out, ignore_errors=True)
    export_bapps(study, out)
    return out


def start_server(port: int) -> subprocess.Popen:
    return processes.start(processes.serve_command(port), stdout=sys.stderr)
