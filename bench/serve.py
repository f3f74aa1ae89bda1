"""Throughput of the rater vote path under gunicorn, against a one-INSERT ceiling.

    .venv/bin/python bench/serve.py [--quick] [--raters N] [--duration S]
                                    [--workers W] [--threads T] [--profile auto|always|never]

1. Drops and recreates a PostgreSQL database (``twoafc_bench``), migrates it and
   builds a READY study in-process (eager Celery, jpeg/webp at crop 256), sized
   so every rater's every session gets its full trials.
2. Serves the app, and ``bench/ceiling`` (the same settings plus ``POST /ceiling/``:
   one INSERT), each with gunicorn (gthread, the same flags) on a free loopback port.
3. Alternates windows between the two, ``--rounds`` of each, ``--duration`` seconds
   per side in all: the machine's speed drifts over minutes, and alternating short
   windows measures both sides under the same conditions. In the app's windows N
   concurrent simulated raters (asyncio + aiohttp, one keep-alive pool) start a
   session, vote on each trial (random side, uuid client_id, rt_ms; about 2 % of
   votes are sent twice with the same client_id), finish, and start another, until
   the run ends or the rater's session cap is met; between windows they wait, as
   raters on a break. No images are fetched. In the ceiling's windows N clients post
   to ``/ceiling/``. A window closes to new requests on time and ends when the
   requests in flight have been answered. ratio = votes_per_s / ceiling_per_s.
4. Checks the acknowledged votes against the database: lost (acked, absent),
   duplicated (a second row per trial or per client id, or a replay answered as new).
5. Below the target ratio (or with --profile), profiles the vote path in-process
   (cProfile over Django's test client) and counts its queries.
6. Stops gunicorn and drops the database.

Everything goes to 127.0.0.1. Diagnostics go to stderr; the last stdout line is
one JSON object: {"raters", "votes_per_s", "ceiling_per_s", "ratio", "p50_ms",
"p99_ms", "errors", "lost", "duplicated", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import io
import json
import math
import os
import pstats
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from benchdb import drop_database, make_ready, recreate_database, setup_django

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
STUDY_SLUG = "bench"
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera",
    "hubble_deep_field", "immunohistochemistry", "retina",
)  # fmt: skip
# 9 conditions: 36 pairs per reference patch; 8 photos x 16 patches x 36 = 4,608 triplets.
CONDITIONS = (
    ("jpeg", 10), ("jpeg", 20), ("jpeg", 35), ("jpeg", 50), ("jpeg", 70), ("jpeg", 90),
    ("webp", 10), ("webp", 30), ("webp", 60),
)  # fmt: skip
TARGET_RATIO = 0.5
REQUEST_TIMEOUT_S = 30.0


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 raters, 10 s")
    parser.add_argument("--raters", type=int, default=None, help="concurrent raters (200)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per side, all rounds (30)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="windows per side, alternating")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--keep-alive", type=int, default=10, help="gunicorn keep-alive seconds")
    parser.add_argument("--trials", type=int, default=20, help="trials per session")
    parser.add_argument("--votes-per-triplet", type=int, default=5, help="at least this many")
    parser.add_argument(
        "--max-sessions", type=int, default=10, help="sessions per rater, at most (sizes the study)"
    )
    parser.add_argument("--replay-rate", type=float, default=0.02)
    parser.add_argument("--db-name", default="twoafc_bench")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="profile the vote path in-process: below the target ratio (auto), always, never",
    )
    parser.add_argument("--profile-votes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.raters = args.raters or (50 if args.quick else 200)
    args.duration = args.duration or (10.0 if args.quick else 30.0)
    if args.quick:
        args.max_sessions = min(args.max_sessions, 6)
        args.profile_votes = min(args.profile_votes, 100)
    return args


# --- the database and the study ---------------------------------------------------------


def build_study(args) -> dict:
    """Migrate, create the ceiling table and a READY study sized for every session."""
    from django.core.management import call_command
    from django.db import connection

    from studies.models import Study

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial primary key, payload text)"
        )
    patches = 16  # (256 // 64) ** 2: every cell of the crop
    triplets = len(PHOTOS) * patches * math.comb(len(CONDITIONS), 2)
    votes_needed = args.raters * args.max_sessions * args.trials
    # 10 % headroom: the engine hands out the least-assigned triplets, but the last
    # sessions of a nearly full study could be short.
    votes_per_triplet = max(args.votes_per_triplet, math.ceil(votes_needed / (0.9 * triplets)))
    study = Study.objects.create(
        name="Serve benchmark", slug=STUDY_SLUG, patch_size=64, patches_per_image=patches,
        crop_size=256, votes_per_triplet=votes_per_triplet, trials_per_session=args.trials,
        # Sentinels at the rate alone (no min_sentinels floor): the session layout earlier
        # results were measured on.
        min_sentinels=0,
    )  # fmt: skip
    make_ready(study, PHOTOS, CONDITIONS)
    count = study.triplets.count()
    info = {
        "triplets": count,
        "votes_per_triplet": votes_per_triplet,
        "trials_per_session": args.trials,
        "session_capacity": count * votes_per_triplet // args.trials,
        "setup_s": round(time.perf_counter() - started, 1),
    }
    log(f"study ready: {info}")
    connection.close()
    return info


# --- gunicorn -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(settings_module: str) -> dict:
    from twoafc.processes import child_env as app_env

    env = app_env(DJANGO_SETTINGS_MODULE=settings_module)
    env["PYTHONPATH"] += os.pathsep + str(BENCH)  # the ceiling app lives in bench/
    return env


def gunicorn_command(args, port: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "twoafc.wsgi", "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread", "--workers", str(args.workers), "--threads", str(args.threads),
        "--keep-alive", str(args.keep_alive), "--backlog", "2048", "--log-level", "warning",
    ]  # fmt: skip


def start_gunicorn(args, settings_module: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        gunicorn_command(args, port),
        env=child_env(settings_module),
        cwd=ROOT,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {process.returncode}")
        try:
            urllib.request.urlopen(f"{base}/api/sessions/{uuid.UUID(int=0)}", timeout=2)
        except urllib.error.HTTPError:
            return process, base  # a 404 from Django: it is up
        except OSError:
            time.sleep(0.2)
            continue
        return process, base
    stop(process)
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop(process: subprocess.Popen | None) -> None:
    from twoafc.processes import stop as stop_process

    stop_process(process)


# --- CPU accounting -------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of this client, one gunicorn tree and PostgreSQL over one side's windows."""

    def __init__(self, server: subprocess.Popen):
        import psutil

        self.psutil = psutil
        self.server = psutil.Process(server.pid)
        self.spent = collections.Counter()  # summed over the windows

    def _sample(self) -> dict:
        psutil = self.psutil

        def cpu(proc) -> float:
            try:
                times = proc.cpu_times()
                return times.user + times.system
            except psutil.Error:
                return 0.0

        server = cpu(self.server) + sum(cpu(c) for c in self.server.children(recursive=True))
        postgres = sum(
            cpu(p) for p in psutil.process_iter(["name"]) if (p.info["name"] or "") == "postgres"
        )
        return {
            "wall": time.monotonic(),
            "client": cpu(psutil.Process()),
            "server": server,
            "postgres": postgres,
            "busy": sum(psutil.cpu_times()[:3]),  # user + nice + system, all cores
        }

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> None:
        after = self._sample()
        for k in after:
            self.spent[k] += after[k] - self.before[k]

    def shares(self) -> dict:
        """Each part's share of the machine's cores over this side's windows."""
        cores = self.psutil.cpu_count() or 1
        share = {
            k: round(self.spent[k] / self.spent["wall"] / cores, 3)
            for k in ("client", "server", "postgres", "busy")
        }
        share["other"] = round(
            share["busy"] - share["client"] - share["server"] - share["postgres"], 3
        )
        return {f"cpu_{k}": v for k, v in share.items()}


# --- the client -----------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.vote_lat: list[float] = []
        self.start_lat: list[float] = []
        self.other_lat: list[float] = []
        self.errors = collections.Counter()
        self.error_samples: list[str] = []
        self.acked: dict[tuple[str, int], str] = {}  # (session, index) -> client_id
        self.votes_new = 0  # answered 201
        self.votes_first_200 = 0  # a first send answered as a replay: should never happen
        self.replays_sent = 0
        self.replays_ok = 0  # answered 200 with replay: true
        self.replays_created = 0  # answered 201: a second vote was made
        self.sessions = 0
        self.sessions_finished = 0
        self.capped_raters = 0
        self.ok = 0  # ceiling
        self.elapsed = 0.0  # seconds of this side's windows
        self.rounds: list[tuple[int, float]] = []  # (answered, seconds) per window

    @property
    def answered(self) -> int:
        """New votes (the app) or inserts (the ceiling): what the throughput counts."""
        return self.votes_new + self.ok

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 8:
            self.error_samples.append(f"{kind}: {detail[:200]}")


class Gate:
    """Opens one side's window: its clients send while it is open and wait while it is
    shut; ``drained`` waits for the requests in flight. Once ``end``ed, ``wait`` is False."""

    def __init__(self):
        self.is_open = asyncio.Event()
        self.in_flight = 0
        self.ended = False

    async def wait(self) -> bool:
        await self.is_open.wait()
        return not self.ended

    async def post(self, http, url: str, body: dict) -> tuple[int, dict | None, float]:
        self.in_flight += 1
        try:
            return await post(http, url, body)
        finally:
            self.in_flight -= 1

    async def drained(self) -> None:
        while self.in_flight:
            await asyncio.sleep(0.002)

    def end(self) -> None:
        self.ended = True
        self.is_open.set()


async def post(http, url: str, body: dict) -> tuple[int, dict | None, float]:
    started = time.perf_counter()
    async with http.post(
        url, data=json.dumps(body), headers={"Content-Type": "application/json"}
    ) as response:
        raw = await response.read()
    elapsed = time.perf_counter() - started
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = {"raw": raw[:200].decode("latin-1")}
    return response.status, payload, elapsed


async def rater(http, base: str, n: int, args, gate: Gate, stats: Stats) -> None:
    rng = random.Random(args.seed * 100_003 + n)
    for k in range(args.max_sessions):
        if not await gate.wait():
            return
        participant = f"bench-{n}" if k == 0 else f"bench-{n}-{k}"
        try:
            status, body, elapsed = await gate.post(
                http,
                f"{base}/api/studies/{STUDY_SLUG}/sessions",
                {"participant_id": participant, "tab_id": str(n), "consent": True},
            )
        except Exception as error:  # noqa: BLE001 - every failure is counted
            stats.error(f"start:{type(error).__name__}", str(error))
            return
        if status != 201:
            stats.error(f"start:{status}", json.dumps(body))
            return
        stats.start_lat.append(elapsed)
        stats.sessions += 1
        token = body["session"]
        answered = 0
        for trial in body["trials"]:
            if not await gate.wait():
                return
            vote = {
                "index": trial["index"],
                "triplet": trial["triplet"],
                "side": rng.choice(("left", "right")),
                "client_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "rt_ms": round(rng.uniform(300, 3000), 1),
                "display_mode": "side-by-side",
                "tab_id": str(n),
            }
            url = f"{base}/api/sessions/{token}/votes"
            try:
                status, reply, elapsed = await gate.post(http, url, vote)
            except Exception as error:  # noqa: BLE001
                stats.error(f"vote:{type(error).__name__}", str(error))
                continue
            if status not in (200, 201):
                stats.error(f"vote:{status}", json.dumps(reply))
                continue
            stats.vote_lat.append(elapsed)
            stats.acked[(token, trial["index"])] = vote["client_id"]
            answered += 1
            if status == 201:
                stats.votes_new += 1
            else:
                stats.votes_first_200 += 1
            if rng.random() < args.replay_rate:
                stats.replays_sent += 1
                try:
                    status, reply, elapsed = await gate.post(http, url, vote)
                except Exception as error:  # noqa: BLE001
                    stats.error(f"replay:{type(error).__name__}", str(error))
                    continue
                stats.other_lat.append(elapsed)
                if status == 200 and reply.get("replay"):
                    stats.replays_ok += 1
                elif status == 201:
                    stats.replays_created += 1
                else:
                    stats.error(f"replay:{status}", json.dumps(reply))
        if answered == len(body["trials"]) and await gate.wait():
            url = f"{base}/api/sessions/{token}/finish"
            try:
                status, reply, elapsed = await gate.post(http, url, {})
            except Exception as error:  # noqa: BLE001
                stats.error(f"finish:{type(error).__name__}", str(error))
                continue
            if status == 200 and reply.get("completion_code"):
                stats.other_lat.append(elapsed)
                stats.sessions_finished += 1
            else:
                stats.error(f"finish:{status}", json.dumps(reply))
    stats.capped_raters += 1


async def ceiling_client(http, base: str, n: int, gate: Gate, stats: Stats) -> None:
    i = 0
    while await gate.wait():
        i += 1
        try:
            status, reply, elapsed = await gate.post(
                http, f"{base}/ceiling/", {"payload": f"{n}:{i}"}
            )
        except Exception as error:  # noqa: BLE001
            stats.error(f"ceiling:{type(error).__name__}", str(error))
            continue
        if status == 201:
            stats.ok += 1
            stats.vote_lat.append(elapsed)
        else:
            stats.error(f"ceiling:{status}", json.dumps(reply))


async def warm_up(http, base: str, concurrency: int) -> None:
    """Open the pool's connections and wake every worker thread and its DB connection."""

    async def one():
        for _ in range(3):
            try:
                async with http.get(f"{base}/api/sessions/{uuid.uuid4()}") as response:
                    await response.read()
            except Exception:  # noqa: BLE001 - warm-up only
                pass

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(concurrency))), 60)


async def drive(args, sides: dict[str, tuple[str, CpuMeter]]) -> dict[str, Stats]:
    """Alternate windows between the app ("votes") and the ceiling, ``args.rounds`` each."""
    import aiohttp

    stats = {side: Stats() for side in sides}
    gates = {side: Gate() for side in sides}
    connector = aiohttp.TCPConnector(limit=2 * args.raters + 16, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        for base, _ in sides.values():
            await warm_up(http, base, args.raters)
        votes_base, ceiling_base = sides["votes"][0], sides["ceiling"][0]
        clients = [rater(http, votes_base, n, args, gates["votes"], stats["votes"])
                   for n in range(args.raters)]  # fmt: skip
        clients += [ceiling_client(http, ceiling_base, n, gates["ceiling"], stats["ceiling"])
                    for n in range(args.raters)]  # fmt: skip
        running = asyncio.gather(*clients)
        window = args.duration / args.rounds
        for _ in range(args.rounds):
            for side, (_, meter) in sides.items():
                gate, side_stats = gates[side], stats[side]
                before = side_stats.answered
                meter.start()
                opened = time.monotonic()
                gate.is_open.set()
                await asyncio.sleep(window)
                gate.is_open.clear()
                # Requests in flight finish (each within REQUEST_TIMEOUT_S) inside the window.
                await asyncio.wait_for(gate.drained(), REQUEST_TIMEOUT_S + 30)
                elapsed = time.monotonic() - opened
                meter.stop()
                side_stats.elapsed += elapsed
                side_stats.rounds.append((side_stats.answered - before, elapsed))
                log(f"  {side}: {(side_stats.answered - before) / elapsed:.1f}/s")
        for gate in gates.values():
            gate.end()
        await asyncio.wait_for(running, REQUEST_TIMEOUT_S + 30)
    return stats


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[rank] * 1000, 1)


# --- checks and profiling (in-process) ------------------------------------------------


def check_votes(stats: Stats) -> dict:
    """Compare what the clients were acknowledged with the Vote rows."""
    from django.db import connection

    from rating.models import Vote

    rows = list(Vote.objects.values_list("trial__session__token", "trial__index", "client_id"))
    connection.close()
    by_trial = collections.Counter((str(t), i) for t, i, _ in rows)
    by_client = collections.Counter(str(c) for _, _, c in rows)
    stored = {(str(t), i): str(c) for t, i, c in rows}
    # Lost: acknowledged, and no row for that trial or a row with another client id.
    lost = sum(1 for key, client in stats.acked.items() if stored.get(key) != client)
    duplicated = (
        sum(n - 1 for n in by_trial.values() if n > 1)
        + sum(n - 1 for n in by_client.values() if n > 1)
        + stats.replays_created
    )
    return {
        "votes_in_db": len(rows),
        "lost": lost,
        "duplicated": duplicated,
        "unacked_in_db": len(set(stored) - set(stats.acked)),
    }


def profile_vote_path(args) -> dict:
    """The vote path in-process, one request at a time (no contention): Django's test
    client, timed without a profiler, then under cProfile; queries counted per request."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    sessions, start_s, start_queries = [], [], None
    for n in range(1000):  # bounded; stops once there are trials enough
        if sum(len(s["trials"]) for s in sessions) > 2 * args.profile_votes:
            break
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.post(
                f"/api/studies/{STUDY_SLUG}/sessions",
                {"participant_id": f"profile-{n}", "tab_id": "p", "consent": True},
                content_type="application/json",
            )
            start_s.append(time.perf_counter() - started)
        if response.status_code != 201:
            log(f"profile: session start answered {response.status_code}")
            break
        start_queries = start_queries or len(captured.captured_queries)
        sessions.append(response.json())
    # The first session's trials come first, so it can be finished once they are voted.
    votes = [(s["session"], t) for s in sessions for t in s["trials"]]
    rng = random.Random(1)

    def send(token, trial):
        return client.post(
            f"/api/sessions/{token}/votes",
            {
                "index": trial["index"], "triplet": trial["triplet"],
                "side": rng.choice(("left", "right")), "client_id": str(uuid.uuid4()),
                "rt_ms": 500.0, "display_mode": "side-by-side", "tab_id": "p",
            },
            content_type="application/json",
        )  # fmt: skip

    with CaptureQueriesContext(connection) as captured:
        assert send(*votes[0]).status_code == 201
    vote_sql = [q["sql"][:150] for q in captured.captured_queries]
    for vote in votes[1:21]:  # warm-up, not timed
        send(*vote)
    votes = votes[21:]
    half = min(args.profile_votes, len(votes) // 2)
    plain, profiled = votes[:half], votes[half : 2 * half]
    started = time.perf_counter()
    for vote in plain:
        send(*vote)
    ms_per_vote = (time.perf_counter() - started) / max(1, len(plain)) * 1000
    first = sessions[0]
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        response = client.post(
            f"/api/sessions/{first['session']}/finish", {}, content_type="application/json"
        )
        finish_ms = (time.perf_counter() - started) * 1000
    finish_queries = len(captured.captured_queries) if response.status_code == 200 else None

    profiler = cProfile.Profile()
    profiler.enable()
    for vote in profiled:
        send(*vote)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_callees("post_vote|record_vote")
    log(out.getvalue())
    log("queries of one vote:\n  " + "\n  ".join(vote_sql))
    # The app's own functions by cumulative time, and where a vote's time goes.
    per = 1000 / max(1, len(profiled))
    app, sql_ms = [], 0.0
    cum_of = collections.defaultdict(float)
    platform_dir = str(ROOT / "platform")
    for (filename, _, func), (_, ncalls, _, cum, _) in stats.stats.items():
        if filename.startswith(platform_dir):
            name = f"{Path(filename).parent.name}/{Path(filename).name}:{func}"
            app.append((cum * per, name, ncalls / len(profiled)))
        if func == "_execute" and filename.endswith("django/db/backends/utils.py"):
            sql_ms += cum * per
        for suffix, name in (
            ("django/test/client.py", "__call__"),
            ("django/core/handlers/base.py", "get_response"),
            ("rating/api.py", "post_vote"),
            ("rating/services.py", "record_vote"),
            ("psycopg/connection.py", "wait"),
        ):
            if func == name and filename.endswith(suffix):
                cum_of[name] = max(cum_of[name], cum * per)
    total_ms = cum_of["__call__"]
    buckets = {
        "handler_total": cum_of["get_response"],
        "middleware_and_routing": cum_of["get_response"] - cum_of["post_vote"],
        "view_parse_validate_respond": cum_of["post_vote"] - cum_of["record_vote"],
        "db_roundtrips": cum_of["wait"],
        "record_vote_python": cum_of["record_vote"] - cum_of["wait"],
    }
    app.sort(reverse=True)
    connection.close()
    mean_trials = sum(len(s["trials"]) for s in sessions) / max(1, len(sessions))
    ms_per_start = sum(start_s) / max(1, len(start_s)) * 1000
    return {
        "inprocess_ms_per_vote": round(ms_per_vote, 2),
        "inprocess_ms_per_start": round(ms_per_start, 2),
        "inprocess_ms_per_finish": round(finish_ms, 2),
        "trials_per_session_actual": round(mean_trials, 1),
        # Share of a whole session's server time that its start takes (in-process).
        "start_share_of_session": round(
            ms_per_start / (ms_per_start + mean_trials * ms_per_vote + finish_ms), 3
        ),
        "queries_per_vote": len(vote_sql),
        "queries_per_start": start_queries,
        "queries_per_finish": finish_queries,
        "profiled_ms_per_vote": round(total_ms, 2),
        "profiled_sql_ms_per_vote": round(sql_ms, 2),
        "profile_buckets_ms": {k: round(v, 2) for k, v in buckets.items()},
        "profile_top": [f"{name}: {ms:.2f} ms/vote ({calls:g}x)" for ms, name, calls in app[:10]],
    }


# --- main -----------------------------------------------------------------------------


def run_alternating(args) -> tuple[dict[str, Stats], dict[str, dict]]:
    """Serve the app and the ceiling side by side and drive them in alternating windows."""
    servers = []
    try:
        sides = {}
        for side, settings_module in (
            ("votes", "twoafc.settings"),
            ("ceiling", "ceiling.settings"),
        ):
            server, base = start_gunicorn(args, settings_module)
            servers.append(server)
            sides[side] = (base, CpuMeter(server))
        stats = asyncio.run(drive(args, sides))
    finally:
        for server in servers:
            stop(server)
    return stats, {side: meter.shares() for side, (_, meter) in sides.items()}


def round_ratios(votes: Stats, ceiling: Stats) -> list[float]:
    return [
        round((v / v_s) / (c / c_s), 3) if c else 0.0
        for (v, v_s), (c, c_s) in zip(votes.rounds, ceiling.rounds, strict=True)
    ]


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="twoafc-bench-serve-"))
    os.environ["DATABASE_URL"] = f"{args.pg}/{args.db_name}"
    os.environ["TWOAFC_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ["DEBUG"] = "0"
    result: dict = {"raters": args.raters}
    load_before = os.getloadavg()[0]
    recreate_database(args.pg, args.db_name)
    try:
        setup_django((BENCH,))
        study = build_study(args)

        log(
            f"{args.raters} raters and {args.raters} ceiling clients, {args.rounds} windows "
            f"of {args.duration / args.rounds:g} s each ..."
        )
        both, cpu = run_alternating(args)
        votes, ceiling = both["votes"], both["ceiling"]
        checks = check_votes(votes)

        elapsed, ceiling_elapsed = votes.elapsed, ceiling.elapsed
        votes_per_s = votes.votes_new / elapsed
        ceiling_per_s = ceiling.ok / ceiling_elapsed
        ratio = votes_per_s / ceiling_per_s if ceiling_per_s else 0.0
        errors = sum(votes.errors.values())
        result.update(
            {
                "votes_per_s": round(votes_per_s, 1),
                "ceiling_per_s": round(ceiling_per_s, 1),
                "ratio": round(ratio, 3),
                # Window by window; the first holds the burst of every rater's first start.
                "ratio_by_round": round_ratios(votes, ceiling),
                "p50_ms": percentile(votes.vote_lat, 50),
                "p99_ms": percentile(votes.vote_lat, 99),
                "errors": errors,
                "lost": checks["lost"],
                "duplicated": checks["duplicated"],
                "duration_s": round(elapsed, 2),
                "ceiling_duration_s": round(ceiling_elapsed, 2),
                "rounds": args.rounds,
                "workers": args.workers,
                "threads": args.threads,
                "worker_class": "gthread",
                "sessions": votes.sessions,
                "sessions_finished": votes.sessions_finished,
                "capped_raters": votes.capped_raters,
                "votes_acked": len(votes.acked),
                "votes_in_db": checks["votes_in_db"],
                "unacked_in_db": checks["unacked_in_db"],
                "first_send_answered_200": votes.votes_first_200,
                "replays_sent": votes.replays_sent,
                "replays_ok": votes.replays_ok,
                "requests_per_s": round(
                    (len(votes.vote_lat) + len(votes.start_lat) + len(votes.other_lat)) / elapsed, 1
                ),
                "start_p50_ms": percentile(votes.start_lat, 50),
                "start_p99_ms": percentile(votes.start_lat, 99),
                "ceiling_p50_ms": percentile(ceiling.vote_lat, 50),
                "ceiling_p99_ms": percentile(ceiling.vote_lat, 99),
                "ceiling_errors": sum(ceiling.errors.values()),
                "votes_cpu": cpu["votes"],
                "ceiling_cpu": cpu["ceiling"],
                "study": study,
                "loadavg_1m_before": round(load_before, 2),
            }
        )
        for stats, name in ((votes, "votes"), (ceiling, "ceiling")):
            if stats.errors:
                log(f"{name} errors: {dict(stats.errors)}")
                for sample in stats.error_samples:
                    log(f"  {sample}")
        if args.profile == "always" or (args.profile == "auto" and ratio < TARGET_RATIO):
            log("profiling the vote path in-process ...")
            result.update(profile_vote_path(args))
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up
            pass
        drop_database(args.pg, args.db_name)
        shutil.rmtree(data_dir, ignore_errors=True)
    result["target_met"] = bool(
        result.get("ratio", 0) >= TARGET_RATIO
        and result.get("errors") == 0
        and result.get("lost") == 0
        and result.get("duplicated") == 0
    )
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
