"""CLIC import: one vote per O,A,B,T row, back to the same triplets, counts and 2AFC scores;
bad rows, paths and images are refused with nothing left behind."""

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from datasets.imports import ImportRejected, import_clic
from rating.selectors import study_votes
from studies.models import Study
from tests.datasets.test_import_bapps import (
    assert_nothing_imported,
    judged,
    make_voted_study,
    noise_png,
    psnr_2afc,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def voted_study(db, django_capture_on_commit_callbacks):
    return make_voted_study(django_capture_on_commit_callbacks)


def write_clic(study: Study, folder: Path) -> Path:
    """The study's votes as CLIC rows (T=0: p0 preferred), images named by their row ids."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = ["O,A,B,T"]
    for vote in study_votes(study):
        triplet = vote.trial.triplet
        names = []
        for prefix, obj in (("ref", triplet.patch), ("s", triplet.p0), ("s", triplet.p1)):
            name = f"{prefix}{obj.pk}.png"
            with obj.image.open("rb") as src, open(images / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
            names.append(name)
        rows.append(",".join(names + [str(int(vote.chose_p1))]))
    (folder / "oracle.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_clic_rows_import_as_one_vote_each_with_the_same_triplets_and_scores(
    voted_study, tmp_path, capsys
):
    folder = write_clic(voted_study, tmp_path / "clic")
    call_command(
        "import_clic", str(folder / "oracle.csv"), "--images", str(folder / "images"),
        "--slug", "clic-copy",
    )  # fmt: skip
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"study": "clic-copy", "triplets": 12, "votes": 36, "stimuli": 12,
                      "references": 4, "jnd_pairs": 0}  # fmt: skip
    copy = Study.objects.get(slug="clic-copy")
    # Repeated rows of one O,A,B are several votes on one triplet: the counts come back exactly.
    assert judged(copy) == judged(voted_study)
    assert psnr_2afc(copy) == psnr_2afc(voted_study)


def write_small_clic(folder: Path, rows: list[str]) -> Path:
    for i, name in enumerate(("o.png", "a.png", "b.png", "sub/c.png")):
        noise_png(folder / "images" / name, seed=i)
    (folder / "oracle.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_t_zero_is_a_vote_for_a_and_names_may_be_in_subfolders(tmp_path):
    folder = write_small_clic(
        tmp_path, ["o.png,a.png,b.png,0", "", "o.png, a.png, b.png, 0", "o.png,a.png,sub/c.png,1"]
    )
    counts = import_clic(folder / "oracle.csv", folder / "images", "small")
    assert counts["triplets"] == 2 and counts["votes"] == 3 and counts["references"] == 1
    study = Study.objects.get(slug="small")
    assert sorted(judged(study).values()) == [(0, 1), (2, 0)]


def _link_outside(folder: Path) -> None:
    noise_png(folder.parent / "secret.png", seed=5)
    (folder / "images" / "link.png").symlink_to(folder.parent / "secret.png")


CORRUPT = {
    "dot-dot path": (["o.png,../outside.png,b.png,0"], None, "../outside.png (oracle.csv line 1): not a path inside"),
    "absolute path": (["o.png,a.png,/etc/hostname,1"], None, "/etc/hostname (oracle.csv line 1): not a path inside"),
    "symlink out": (["o.png,a.png,b.png,0", "o.png,link.png,b.png,1"], _link_outside,
                    "link.png (oracle.csv line 2): leads outside"),
    "missing file": (["o.png,a.png,b.png,0", "o.png,a.png,gone.png,0"], None,
                     "gone.png (oracle.csv line 2): no such file"),
    "bad T": (["o.png,a.png,b.png,2"], None, "oracle.csv line 1: T is '2'"),
    "no T": (["o.png,a.png,b.png"], None, "oracle.csv line 1: 3 fields"),
    "corrupt image": (["o.png,a.png,b.png,1"], lambda f: (f / "images/b.png").write_bytes(b"GIF8"),
                      "b.png (oracle.csv line 1): not an image"),
    "sizes differ": (["o.png,a.png,b.png,1"], lambda f: noise_png(f / "images/a.png", size=40),
                     "a.png (oracle.csv line 1): 40x40 pixels, but its ref o.png"),
    "empty": (["O,A,B,T"], None, "oracle.csv: no rows"),
}  # fmt: skip


@pytest.mark.parametrize("case", CORRUPT)
def test_a_bad_clic_file_is_refused_naming_the_row_and_nothing_is_left(case, tmp_path, settings):
    rows, corrupt, message = CORRUPT[case]
    folder = write_small_clic(tmp_path / "clic", rows)
    if corrupt:
        corrupt(folder)
    with pytest.raises(CommandError) as raised:
        call_command("import_clic", str(folder / "oracle.csv"), "--images",
                     str(folder / "images"), "--slug", "broken")  # fmt: skip
    assert message in str(raised.value), str(raised.value)
    assert_nothing_imported(settings)


def test_an_unreadable_csv_is_refused(tmp_path, settings):
    folder = write_small_clic(tmp_path, [])
    (folder / "oracle.csv").write_bytes(b"\xff\xfe\x00o.png")
    with pytest.raises(ImportRejected, match="oracle.csv: not a readable CSV"):
        import_clic(folder / "oracle.csv", folder / "images", "x")
    assert_nothing_imported(settings)
