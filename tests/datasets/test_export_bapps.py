"""The BAPPS export loads the way LPIPS's TwoAFCDataset reads it, and votes.csv hides crowd ids."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from datasets.services import VOTE_COLUMNS, export_bapps
from rating.models import Vote
from tests.datasets.conftest import load_like_lpips

pytestmark = pytest.mark.django_db


def test_export_has_the_bapps_layout_with_judges_from_the_votes(voted_study, tmp_path):
    info = export_bapps(voted_study, tmp_path / "out")
    assert info["triplets"] == 18 and set(info["splits"]) == {"train", "val"}
    votes = info["votes"]  # 3 raters x (2 practice + 10 regular), all counted
    assert (votes["cast"], votes["regular"], votes["counted"]) == (36, 30, 30)
    assert (info["raters"], info["counted"], info["left_out"]) == ("unflagged", 3, 0)
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
