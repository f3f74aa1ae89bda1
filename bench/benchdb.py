"""What the benchmarks share: a throw-away PostgreSQL database and Django set up on the
project's source roots (``platform/``, ``codecs/``, plus any the bench adds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = [ROOT / "platform", ROOT / "codecs"]


def _drop(conn, name: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def recreate_database(server_url: str, name: str) -> None:
    """Drop ``name`` on the server at ``server_url`` (if it exists) and create it empty."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        _drop(conn, name)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        _drop(conn, name)


def setup_django(extra_roots: tuple[Path, ...] = ()) -> None:
    """Put the source roots first on sys.path and run ``django.setup()``."""
    for root in reversed([*SOURCE_ROOTS, *extra_roots]):
        sys.path.insert(0, str(root))
    os.environ["DJANGO_SETTINGS_MODULE"] = "twoafc.settings"
    import django

    django.setup()


def make_ready(study, photos, conditions) -> None:
    """Give ``study`` the bundled ``photos`` and codec ``conditions`` ((codec, level) pairs)
    and generate its stimuli in this process (eager Celery); raises unless it ends READY."""
    import numpy as np
    from skimage import data as skdata

    from studies import services, tasks
    from studies.models import Condition, Study
    from twoafc.celery import app

    for photo in photos:
        pixels = np.asarray(getattr(skdata, photo)())
        services.add_source_image(study, services.png_bytes(pixels), f"{photo}.png")
    for codec, level in conditions:
        Condition.objects.create(study=study, codec=codec, level=level)
    app.conf.task_always_eager = True
    job = services.start_generation(study, enqueue=tasks.enqueue_generation)
    study.refresh_from_db()
    job.refresh_from_db()
    if study.status != Study.Status.READY:
        raise RuntimeError(f"generation failed: {job.status} {job.error}")
