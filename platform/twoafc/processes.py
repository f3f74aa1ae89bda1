"""The child processes that the demo, the integration tests and the benches start.

One place says how a Celery worker and gunicorn are launched from this
checkout, with which environment, and how they are stopped.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Source roots, not packages (see manage.py): children get them on PYTHONPATH.
SOURCE_ROOTS = [str(ROOT / "platform"), str(ROOT / "codecs")]


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment, with the source roots on PYTHONPATH and ``overrides`` applied."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(SOURCE_ROOTS + [env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("DJANGO_SETTINGS_MODULE", "twoafc.settings")
    env.update(overrides)
    return env


def worker_command(concurrency: int = 2, loglevel: str = "WARNING") -> list[str]:
    """A worker on both queues; gossip, mingle and heartbeats only slow a lone worker's start."""
    return [
        sys.executable, "-m", "celery", "-A", "twoafc", "worker", "-Q", "cpu,gpu",
        "-c", str(concurrency), "--loglevel", loglevel,
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def serve_command(port: int, workers: int = 2, threads: int = 4) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "twoafc.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--log-level", "warning",
        # A study's first results report (scores, RD curves) can take tens of seconds.
        "--timeout", "300",
    ]  # fmt: skip


def start(
    command: list[str], *, env: dict[str, str] | None = None, stdout=None
) -> subprocess.Popen:
    """Start ``command`` from the checkout in its own process group, so ``stop`` can end its children."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env if env is not None else child_env(),
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
    )


def stop(process: subprocess.Popen | None, timeout_s: float = 30) -> None:
    """Ask politely (SIGTERM: a worker finishes its running tasks), then kill the whole group."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
