"""No Docker engine runs here, so check what compose would run: every command exists in the project."""

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import yaml
from django.conf import settings

from twoafc.celery import app as celery_app

ROOT = Path(settings.BASE_DIR)
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
APP_SERVICES = ("web", "worker-cpu", "worker-gpu")
# The GPU queue is where learned codecs will run; a worker may wait on it before any task does.
KNOWN_QUEUES = {route["queue"] for route in celery_app.conf.task_routes.values()} | {"gpu"}


def commands(service: str) -> list[list[str]]:
    command = COMPOSE["services"][service]["command"]
    if command[:2] == ["sh", "-c"]:
        return [part.split() for part in command[2].split("&&")]
    return [command]


def test_compose_has_every_service():
    assert set(COMPOSE["services"]) == {"web", "worker-cpu", "worker-gpu", "postgres", "redis"}


def test_app_services_only_set_variables_the_settings_read():
    source = (ROOT / "platform" / "twoafc" / "settings.py").read_text()
    for service in APP_SERVICES:
        env = COMPOSE["services"][service]["environment"]
        assert {"DATABASE_URL", "REDIS_URL"} <= set(env)
        for name in env:
            assert re.search(rf'env\w*\("{name}"', source), (
                f"{service} sets {name}, which settings never read"
            )


def test_every_command_names_an_entry_point_that_exists():
    bin_dir = Path(sys.executable).parent
    for service in APP_SERVICES:
        for argv in commands(service):
            program = argv[0]
            if program == "python":
                assert (ROOT / argv[1]).is_file(), argv
                assert argv[2] == "migrate", argv
            elif program == "gunicorn":
                assert (bin_dir / "gunicorn").exists()
                module, _, attribute = argv[1].partition(":")
                assert hasattr(importlib.import_module(module), attribute or "application"), argv
            elif program == "celery":
                assert (bin_dir / "celery").exists()
                assert importlib.util.find_spec(argv[argv.index("-A") + 1] + ".celery"), argv
                queue = argv[argv.index("-Q") + 1]
                assert queue in KNOWN_QUEUES, f"{service} consumes {queue!r}, which no task uses"
            else:
                raise AssertionError(f"{service}: unknown program {program!r}")


def test_dockerfile_copies_every_source_root():
    copied = re.findall(r"^COPY (\S+)", (ROOT / "docker" / "Dockerfile").read_text(), re.M)
    assert {"platform", "codecs", "templates", "static"} <= set(copied)
