"""The README's first command, end to end: `manage.py demo --no-serve` on the embedded default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings


def run_demo(data_dir: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env["TWOAFC_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "manage.py", "demo", "--no-serve"],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the whole demo in a subprocess, twice
def test_demo_builds_rates_exports_and_fits_then_reuses_it(tmp_path):
    first = run_demo(tmp_path)
    assert first["study"] == "demo"
    assert first["triplets"] >= 200 and first["votes"] >= 600
    assert first["stimuli"] == 8 * 6 * 5  # photos × patches × conditions
    export = Path(first["export"])
    assert (export / "votes.csv").is_file()
    assert (
        len(list(export.glob("*/demo/judge/*.npy")))
        == json.loads((export / "export.json").read_text())["triplets"]
    )
    fit = first["fit"]
    assert fit["split"] == "test" and fit["afc"]["dpl"] > fit["afc"]["psnr"]
    assert Path(fit["weights"]).is_file()

    again = run_demo(tmp_path)  # reuses the study, its stimuli and its votes
    assert (again["stimuli"], again["triplets"], again["votes"]) == (
        first["stimuli"],
        first["triplets"],
        first["votes"],
    )
