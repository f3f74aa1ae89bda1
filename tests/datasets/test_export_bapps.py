"""The BAPPS export loads the way LPIPS's TwoAFCDataset reads it, and votes.csv hides crowd ids."""

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from datasets.services import VOTE_COLUMNS, export_bapps
from rating import services as rating
from rating.models import Vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def voted_study(ready_study):
    """Three raters (ids a real market would send) answer every trial: p1 whenever it is on the left."""
    for participant in ("PROLIFIC-AAA", "PROLIFIC-BBB", "PROLIFIC-CCC"):
        session = rating.start_session(ready_study, rating.Arrival(participant_id=participant))
        for trial in session.trials.all():
            side = "left" if trial.p1_on_left else "right"
            rating.record_vote(
            session.token, index=trial.index, triplet_id=trial.triplet_id, side=side,
                               client_id=uuid.uuid4(), rt_ms=500)  # fmt: skip
    return ready_study


def load_like_lpips(root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """What LPIPS's TwoAFCDataset does: sorted files per folder, paired by position."""
    folders = {name: sorted((root / name).iterdir()) for name in ("ref", "p0", "p1", "judge")}
    assert len({len(files) for files in folders.values()}) == 1
    rows = []
    for ref, p0, p1, judge in zip(*folders.values(), strict=False):
        assert ref.name == p0.name == p1.name and judge.stem == ref.stem
        value = np.load(judge).reshape((1, 1, 1))
        rows.append(
            tuple(np.asarray(Image.open(f).convert("RGB")) for f in (ref, p0, p1))
            + (float(value[0, 0, 0]),)
        )
    return rows


def test_export_has_the_bapps_layout_with_judges_from_the_votes(voted_study, tmp_path):
    info = export_bapps(voted_study, tmp_path / "out")
    assert (
        info["triplets"] == 18 and info["votes"] == 30 and set(info["splits"]) == {"train", "val"}
    )
    root = tmp_path / "out"
    loaded = []
    for split in ("train", "val"):
        loaded += load_like_lpips(root / split / voted_study.slug)
    assert len(loaded) == 18
    # Every vote chose p1, so every judge (fraction choosing p1) is 1.
    assert [judge for *_, judge in loaded] == [1.0] * 18
    for ref, p0, p1, _ in loaded:
        assert ref.shape == p0.shape == p1.shape == (64, 64, 3)


def test_export_splits_by_source_image(voted_study, tmp_path):
    export_bapps(voted_study, tmp_path / "out")
    refs = {split: {p.read_bytes() for p in (tmp_path / "out" / split / voted_study.slug / "ref").iterdir()}
            for split in ("train", "val")}  # fmt: skip
    assert refs["train"] and refs["val"] and not refs["train"] & refs["val"]


def test_votes_csv_has_one_row_per_vote_and_no_crowd_ids(voted_study, tmp_path):
    export_bapps(voted_study, tmp_path / "out")
    text = (tmp_path / "out" / "votes.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == VOTE_COLUMNS
    assert Vote.objects.filter(trial__kind="practice").count() == 6  # 2 practice trials × 3 raters
    assert (
        len(rows) == Vote.objects.exclude(trial__kind="practice").count() == 30
    )  # practice left out
    assert "PROLIFIC" not in text
    assert len({row["observer"] for row in rows}) == 3
    assert {row["selection"] for row in rows} == {"2"}  # condition_2 (p1) chosen every time
    assert all(float(row["p0_bpp"]) > 0 for row in rows)


def test_export_refuses_a_folder_that_is_not_empty(voted_study, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_bapps(voted_study, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_the_command_prints_json_and_names_bad_input(voted_study, tmp_path, capsys):
    call_command("export_bapps", voted_study.slug, str(tmp_path / "cmd"))
    assert json.loads(capsys.readouterr().out)["triplets"] == 18
    with pytest.raises(CommandError, match="no study with slug 'nope'"):
        call_command("export_bapps", "nope", str(tmp_path / "x"))


def test_download_is_staff_only_and_serves_the_zip(client, admin_client, voted_study):
    url = f"/studies/{voted_study.slug}/download/bapps.zip"
    assert client.get(url).status_code == 302  # to the login page
    page = admin_client.get(f"/studies/{voted_study.slug}/download/")
    assert "18 triplets with votes" in page.content.decode()
    response = admin_client.get(url)
    assert response["Content-Disposition"].startswith("attachment")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    assert f"{voted_study.slug}/votes.csv" in names
    assert sum(n.endswith(".npy") for n in names) == 18
