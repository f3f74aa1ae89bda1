"""Snapshot build time and memory for a 100,000-vote study, and the streamed tar download.

    .venv/bin/python bench/snapshot.py [--votes N] [--sqlite] [--photos P] [--profile]

1. Drops and recreates a PostgreSQL database (``twoafc_bench_snapshot``; with
   ``--sqlite`` the embedded default instead, a file in the temporary
   TWOAFC_DATA_DIR), migrates it and builds a READY study in-process (eager
   Celery): P scikit-image photos (8), a 256-px centre crop, every one of its 16
   64-px patches, jpeg 20, jpeg 60 and webp 40: 3 pairs per patch, 384 triplets.
2. Seeds about N votes (100,000) the way raters leave them: N/50 finished
   sessions of 50 trials each (2 practice, 42 regular, 4 sentinel, 2 repeat),
   laid out by the rating engine's own ``lay_out_trials``, and one vote per trial
   inserted with ``bulk_create`` in batches. Most raters prefer the stimulus with
   more bits (a logistic in the log-bpp ratio), answer in about 1.1 s, get
   sentinels right and mostly answer a repeat as before; one in 25 answers too
   fast and one in 25 always picks the left side. ``rating.services.refresh_study_quality``
   then flags those (and a few unlucky others), so the snapshot has exclusions.
3. Runs the build in a child process (this script with ``--child build``):
   Django is set up and the ``snapshot`` command imported, the RSS is read, then
   ``manage.py snapshot <study>`` runs through ``call_command``. ``build_s`` is
   that call's wall time, ``build_cpu_s`` its CPU time (which a busy machine
   disturbs less; the database server's is not in it), ``peak_rss_mb`` the
   child's ``ru_maxrss`` and ``rss_growth_mb`` the peak less the RSS after
   setup, torch included when the build imports it (``torch_imported``).
   ``process_s`` is the child's whole life, start-up included. The peak is read in the child right after the
   command: ``wait4``'s figure would also count the interpreter's exit, where an
   imported torch raises the RSS by a further ~200 MB. The same child then builds
   the next snapshot (same votes) as a Celery worker's later builds run, torch
   already loaded: ``warm_build_s``, and ``warm_rss_growth_mb`` from the RSS read
   every 20 ms.
4. Makes the snapshot public and streams ``/datasets/<name>/archive.tar`` in a
   second child (``--child stream``) through Django's test client, reading its
   RSS at every chunk: ``tar_stream_rss_growth_mb`` is the highest reading less
   the one before the request. The byte count must equal Content-Length.
5. With ``--profile``, builds the next snapshot under cProfile in a child and
   logs the top functions; the JSON gets ``profile_top``.
6. Drops the database and the temporary folder.

Diagnostics go to stderr; the last stdout line is one JSON object:
{"votes", "snapshot_votes", "raters", "flagged_raters", "triplets",
 "files", "bytes", "build_s", "build_cpu_s", "peak_rss_mb", "rss_after_setup_mb", "rss_growth_mb",
 "tar_bytes", "tar_stream_s", "tar_stream_mb_per_s", "tar_stream_rss_growth_mb", ...}
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchdb import drop_database, make_ready, recreate_database, setup_django

ROOT = Path(__file__).resolve().parents[1]
STUDY_SLUG = "bench-snapshot"
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera",
    "hubble_deep_field", "immunohistochemistry", "retina",
)  # fmt: skip
CONDITIONS = (("jpeg", 20), ("jpeg", 60), ("webp", 40))
# Per session: 2 practice + 42 regular + round(42 * 0.1) sentinels + round(42 * 0.05) repeats
# (no min_sentinels floor: the layout stays the one earlier results were measured on).
LAYOUT = {"practice_trials": 2, "trials_per_session": 42, "sentinel_rate": 0.1,
          "min_sentinels": 0, "repeat_rate": 0.05}  # fmt: skip
SESSIONS_PER_COMMIT = 200
VOTE_BATCH = 5000
MB = 1 << 20


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=100_000, help="votes to seed (100,000)")
    parser.add_argument("--photos", type=int, default=len(PHOTOS), help="source photos (8)")
    parser.add_argument("--sqlite", action="store_true", help="the embedded SQLite default")
    parser.add_argument("--profile", action="store_true", help="also build once under cProfile")
    parser.add_argument("--db-name", default="twoafc_bench_snapshot")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument("--seed", type=int, default=0)
    # The child processes of steps 3 to 5 (not for direct use).
    parser.add_argument("--child", nargs=2, metavar=("MODE", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.photos <= len(PHOTOS):
        parser.error(f"--photos must be between 1 and {len(PHOTOS)}")
    if args.votes < 1:
        parser.error("--votes must be positive")
    return args


# --- the database, the study and its votes ----------------------------------------------


def build_study(args):
    """Migrate and build the READY study of step 1; returns it."""
    from django.core.management import call_command

    from studies.models import Study

    call_command("migrate", verbosity=0, interactive=False)
    study = Study.objects.create(
        name="Snapshot benchmark", slug=STUDY_SLUG, patch_size=64, patches_per_image=16,
        crop_size=256, votes_per_triplet=1000, break_every=0, **LAYOUT,
    )  # fmt: skip
    make_ready(study, PHOTOS[: args.photos], CONDITIONS)
    return study


def seed_sessions(study, raters: int, rng: random.Random) -> None:
    """``raters`` finished sessions, their trials laid out by the rating engine."""
    from django.db import transaction
    from django.utils import timezone

    from rating.assignment import Claimed, lay_out_trials
    from rating.models import RaterSession
    from rating.services import rater_hash

    triplets = list(study.triplets.values_list("pk", "patch_id"))
    regular = study.trials_per_session
    if len(triplets) < regular:
        raise RuntimeError(f"{len(triplets)} triplets, fewer than {regular} per session")
    now = timezone.now()
    for first in range(0, raters, SESSIONS_PER_COMMIT):
        with transaction.atomic():
            sessions = RaterSession.objects.bulk_create(
                RaterSession(
                    study=study,
                    rater_hash=rater_hash(study, f"BENCH{n:07d}"),
                    market=RaterSession.Market.PROLIFIC,
                    finished_at=now,
                    screen_w=1920,
                    screen_h=1080,
                    dpr=1.0,
                )
                for n in range(first, min(raters, first + SESSIONS_PER_COMMIT))
            )
            for session in sessions:
                # What claim_triplets would hand lay_out_trials.
                chosen = [
                    Claimed(pk, patch_id, p1_on_left=rng.random() < 0.5)
                    for pk, patch_id in rng.sample(triplets, regular)
                ]
                lay_out_trials(session, chosen)
        log(f"  sessions: {min(raters, first + SESSIONS_PER_COMMIT)}/{raters}")


def seed_votes(study, rng: random.Random) -> int:
    """One vote per trial, in batches; returns the number of votes."""
    import uuid

    from rating.models import Trial, Vote

    fields = ("pk", "session_id", "kind", "p1_on_left", "sentinel_side", "triplet_id",
              "triplet__p0__bpp", "triplet__p1__bpp")  # fmt: skip
    trials = Trial.objects.filter(session__study=study).order_by("session_id", "index")
    order: dict[int, int] = {}  # session -> its rank, which sets the rater's habits
    chosen: dict[tuple[int, int], bool] = {}  # (session, triplet) -> chose p1, for its repeat
    batch: list[Vote] = []
    total = 0
    for pk, session_id, kind, p1_on_left, sentinel_side, triplet_id, p0_bpp, p1_bpp in list(
        trials.values_list(*fields)
    ):
        habit = order.setdefault(session_id, len(order)) % 25
        if habit == 1:  # position bias: always the left side
            side = "left"
        elif kind == Trial.Kind.SENTINEL:
            other = "right" if sentinel_side == "left" else "left"
            side = sentinel_side if rng.random() < 0.99 else other
        else:
            if kind == Trial.Kind.REPEAT and rng.random() < 0.9:
                chose_p1 = chosen[(session_id, triplet_id)]
            else:
                contrast = 3.0 * math.log(max(p1_bpp, 1e-3) / max(p0_bpp, 1e-3))
                chose_p1 = rng.random() < 1.0 / (1.0 + math.exp(-contrast))
            side = "left" if chose_p1 == p1_on_left else "right"
        chose_p1 = (side == "left") == p1_on_left
        if kind == Trial.Kind.REGULAR:
            chosen[(session_id, triplet_id)] = chose_p1
        rt_ms = rng.uniform(120, 280) if habit == 0 else rng.lognormvariate(math.log(1100), 0.5)
        batch.append(Vote(
            trial_id=pk, client_id=uuid.UUID(int=rng.getrandbits(128), version=4), side=side,
            chose_p1=chose_p1, rt_ms=round(rt_ms, 1),
        ))  # fmt: skip
        if len(batch) >= VOTE_BATCH:
            total += _insert_votes(batch)
            batch = []
            log(f"  votes: {total}")
    if batch:
        total += _insert_votes(batch)
    return total


def _insert_votes(batch: list) -> int:
    from django.db import transaction

    from rating.models import Vote

    with transaction.atomic():
        Vote.objects.bulk_create(batch, batch_size=2000)
    return len(batch)


def seed(args, study) -> dict:
    """Step 2: sessions, trials and votes, then quality control's flags."""
    from rating.services import refresh_study_quality

    rng = random.Random(args.seed)
    per_session = (
        study.practice_trials
        + study.trials_per_session
        + study.sentinels_per_session()
        + round(study.trials_per_session * study.repeat_rate)
    )
    raters = max(1, math.ceil(args.votes / per_session))
    started = time.perf_counter()
    seed_sessions(study, raters, rng)
    votes = seed_votes(study, rng)
    refresh_study_quality(study)
    flagged = study.sessions.filter(flagged=True).count()
    info = {"raters": raters, "votes": votes, "flagged_raters": flagged,
            "seed_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    log(f"seeded: {info}")
    return info


# --- the child processes ----------------------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MB


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RssPeak:
    """The highest RSS of this process while the block runs, read every 20 ms."""

    def __enter__(self) -> RssPeak:
        self.before = self.highest = rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            self.highest = max(self.highest, rss_mb())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.highest = max(self.highest, rss_mb())


def child_build(slug: str, profile: bool) -> dict:
    """Build the next snapshot of ``slug`` through ``manage.py snapshot``, measured; then,
    unless profiling, the one after it in the same process (a worker's later builds)."""
    setup_django()
    from django.core.management import call_command, load_command_class

    load_command_class("datasets", "snapshot")  # the command's imports count as setup
    after_setup = rss_mb()
    out = io.StringIO()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu = time.perf_counter(), time.process_time()
    call_command("snapshot", slug, stdout=out)
    build_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    result = {"build_s": round(build_s, 2), "build_cpu_s": round(cpu_s, 2),
              "rss_after_setup_mb": round(after_setup, 1),
              "peak_rss_mb": round(peak_rss_mb(), 1), "torch_imported": "torch" in sys.modules,
              "command": json.loads(out.getvalue().strip().splitlines()[-1])}  # fmt: skip
    if profiler is not None:
        profiler.disable()
        result["profile_top"] = profile_top(profiler)
        return result
    with RssPeak() as peak:
        started = time.perf_counter()
        call_command("snapshot", slug, stdout=io.StringIO())
        result["warm_build_s"] = round(time.perf_counter() - started, 2)
    result["warm_rss_growth_mb"] = round(peak.highest - peak.before, 1)
    return result


def profile_top(profiler) -> list[str]:
    """Log the profile; return the app's and the ORM's heaviest functions by cumulative time."""
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(20)
    log(text.getvalue())
    rows = []
    for (filename, _, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        if "/platform/" in filename or "django/db/models" in filename:
            name = f"{Path(filename).parent.name}/{Path(filename).name}:{func}"
            rows.append((cumtime, tottime, ncalls, name))
    rows.sort(reverse=True)
    return [f"{name}: {cum:.2f} s cum, {tot:.2f} s own ({n}x)" for cum, tot, n, name in rows[:12]]


def child_stream(name: str) -> dict:
    """Stream the public snapshot's tar through the test client, reading the RSS per chunk."""
    setup_django()
    from django.test import Client

    client = Client()
    url = f"/datasets/{name}/archive.tar"
    warm = client.get(url, HTTP_RANGE="bytes=0-1023")  # imports and first queries, off the clock
    if warm.status_code != 206:
        raise RuntimeError(f"{url} answered {warm.status_code} to a range")
    b"".join(warm.streaming_content)
    before = highest = rss_mb()
    size = 0
    started = time.perf_counter()
    response = client.get(url)
    if response.status_code != 200 or not response.streaming:
        raise RuntimeError(f"{url} answered {response.status_code}")
    for chunk in response.streaming_content:
        size += len(chunk)
        highest = max(highest, rss_mb())
    response.close()
    elapsed = time.perf_counter() - started
    expected = int(response["Content-Length"])
    if size != expected:
        raise RuntimeError(f"streamed {size} bytes, Content-Length says {expected}")
    return {"tar_bytes": size, "tar_stream_s": round(elapsed, 2),
            "tar_stream_mb_per_s": round(size / MB / elapsed, 1),
            "tar_stream_rss_before_mb": round(before, 1),
            "tar_stream_rss_growth_mb": round(highest - before, 1)}  # fmt: skip


def run_child(mode: str, name: str, *, profile: bool = False) -> dict:
    """This script as a child (``--child mode name``): its JSON, and its wall time."""
    command = [sys.executable, __file__, "--child", mode, name]
    if profile:
        command.append("--profile")
    started = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=sys.stderr)
    if process.returncode != 0:
        raise RuntimeError(f"child {mode} exited with code {process.returncode}")
    result = json.loads(process.stdout.decode().strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - started, 2)
    return result


# --- main -------------------------------------------------------------------------------


def measure(args) -> dict:
    """Steps 1 to 5, in a database that exists."""
    from django.db import connections

    from datasets.models import Snapshot

    started = time.perf_counter()
    study = build_study(args)
    log(f"study ready: {study.triplets.count()} triplets in {time.perf_counter() - started:.1f} s")
    result = {"database": "sqlite" if args.sqlite else "postgresql", **seed(args, study)}
    connections.close_all()  # the children have the database to themselves

    log("building the snapshot in a child process ...")
    build = run_child("build", STUDY_SLUG)
    command = build.pop("command")
    snapshot = Snapshot.objects.get(name=command["snapshot"])
    result.update(
        snapshot=snapshot.name, snapshot_votes=snapshot.votes, triplets=snapshot.triplets,
        files=snapshot.files_count, bytes=snapshot.bytes_total,
        build_s=build["build_s"], build_cpu_s=build["build_cpu_s"],
        peak_rss_mb=build["peak_rss_mb"],
        rss_after_setup_mb=build["rss_after_setup_mb"],
        rss_growth_mb=round(build["peak_rss_mb"] - build["rss_after_setup_mb"], 1),
        process_s=build["process_s"], torch_imported=build["torch_imported"],
        warm_build_s=build["warm_build_s"], warm_rss_growth_mb=build["warm_rss_growth_mb"],
        build_recorded_s=round((snapshot.finished_at - snapshot.created_at).total_seconds(), 2),
    )  # fmt: skip
    log(f"built {snapshot.name}: {build}")

    Snapshot.objects.filter(pk=snapshot.pk).update(access=Snapshot.Access.PUBLIC)
    connections.close_all()
    log("streaming its tar in a child process ...")
    stream = run_child("stream", snapshot.name)
    result.update({k: v for k, v in stream.items() if k.startswith("tar_")})

    if args.profile:
        log("building the next snapshot under cProfile ...")
        profiled = run_child("build", STUDY_SLUG, profile=True)
        result["profiled_build_s"] = profiled["build_s"]
        result["profile_top"] = profiled["profile_top"]
    connections.close_all()
    return result


def main() -> int:
    args = parse_args()
    if args.child:
        mode, name = args.child
        result = child_build(name, args.profile) if mode == "build" else child_stream(name)
        print(json.dumps(result))
        return 0
    t0 = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="twoafc-bench-snapshot-"))
    os.environ["TWOAFC_DATA_DIR"] = str(data_dir)
    os.environ["DEBUG"] = "0"  # DEBUG keeps every query in memory
    if args.sqlite:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = f"{args.pg}/{args.db_name}"
        recreate_database(args.pg, args.db_name)
    load_before = os.getloadavg()[0]
    try:
        setup_django()
        result = measure(args)
    finally:
        if not args.sqlite:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001 - Django may not be set up
                pass
            drop_database(args.pg, args.db_name)
        shutil.rmtree(data_dir, ignore_errors=True)
    result["loadavg_1m_before"] = round(load_before, 2)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
