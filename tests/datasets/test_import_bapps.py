"""BAPPS import: an exported study comes back with the same triplets, judges and 2AFC scores,
JND folders keep their "same" shares, and malformed folders are refused with nothing left behind."""

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from PIL import Image

from analytics import metrics, scoring
from analytics.services import load_triplets, score_metrics
from datasets import imports
from datasets.imports import ImportRejected, import_bapps, import_clic, vote_counts
from datasets.services import export_bapps
from rating import services as rating
from rating.models import RaterSession, Trial, Vote
from rating.selectors import voted_triplets
from studies import services as studies
from studies.models import JndPair, SourceImage, Stimulus, Study, Triplet
from studies.services import load_pixels
from tests.conftest import generate, make_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def voted_study(db, django_capture_on_commit_callbacks):
    return make_voted_study(django_capture_on_commit_callbacks)


def make_voted_study(django_capture_on_commit_callbacks) -> Study:
    """2 photos × 2 patches × 3 pairs = 12 triplets, 3 votes each from 3 raters choosing at random,
    so judges are 0, 1/3, 2/3 or 1."""
    study = make_study(patches_per_image=2, votes_per_triplet=3, trials_per_session=12)
    generate(study, django_capture_on_commit_callbacks)
    rng = np.random.default_rng(7)
    for participant in ("PROLIFIC-A", "PROLIFIC-B", "PROLIFIC-C"):
        session = rating.start_session(study, rating.Arrival(participant_id=participant))
        for trial in session.trials.all():
            chose_p1 = bool(rng.random() < 0.5)
            rating.record_vote(
                session.token, index=trial.index, triplet_id=trial.triplet_id,
                side="left" if trial.p1_on_left == chose_p1 else "right",
                client_id=uuid.uuid4(), rt_ms=600,
            )  # fmt: skip
    assert Vote.objects.filter(trial__session__study=study).count() == 36
    return study


def pixel_key(field_file) -> str:
    return hashlib.sha256(load_pixels(field_file).tobytes()).hexdigest()


def judged(study: Study) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(ref, p0, p1) pixel hashes -> (n_p0, n_p1) of every voted triplet."""
    return {
        (pixel_key(t.patch.image), pixel_key(t.p0.image), pixel_key(t.p1.image)): (t.n_p0, t.n_p1)
        for t in voted_triplets(study)
    }


def psnr_2afc(study: Study) -> dict[tuple[str, str, str], float]:
    """The 2AFC score of PSNR on each voted triplet alone, by pixel hashes; and on all of them."""
    data = load_triplets(study)
    distance = metrics.psnr_distance(data.refs, data.stimuli)
    keys = {
        t.pk: (pixel_key(t.patch.image), pixel_key(t.p0.image), pixel_key(t.p1.image))
        for t in voted_triplets(study)
    }
    per_triplet = {
        keys[pk]: scoring.score_2afc(distance[[i0]], distance[[i1]], [g])
        for pk, i0, i1, g in zip(data.triplet_ids, data.p0, data.p1, data.judge, strict=True)
    }
    total = scoring.score_2afc(distance[data.p0], distance[data.p1], data.judge)
    assert total == pytest.approx(np.mean(list(per_triplet.values())), abs=1e-12)
    return per_triplet


def stored_files(settings) -> list[Path]:
    media = Path(settings.MEDIA_ROOT)
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_exported_study_imports_with_the_same_triplets_judges_and_scores(voted_study, tmp_path):
    export_bapps(voted_study, tmp_path / "bapps")
    counts = import_bapps(tmp_path / "bapps", "copy", votes_per_triplet=3)
    assert counts == {"study": "copy", "triplets": 12, "votes": 36, "stimuli": 12,
                      "references": 4, "jnd_pairs": 0}  # fmt: skip
    copy = Study.objects.get(slug="copy")
    assert copy.origin == Study.Origin.IMPORTED and copy.status == Study.Status.COMPLETE
    # Same pixels, same counts per triplet, hence the same judges and the same 2AFC score.
    assert judged(copy) == judged(voted_study)
    assert psnr_2afc(copy) == psnr_2afc(voted_study)
    # Each vote is its own pseudo rater's regular trial; no rater votes twice on a triplet.
    assert RaterSession.objects.filter(study=copy, market="imported").count() == 3
    assert not Trial.objects.filter(session__study=copy).exclude(kind="regular").exists()
    # Never generated: its conditions label the import and are refused.
    with pytest.raises(ValidationError, match="was imported"):
        studies.check_ready_to_generate(copy)


def test_judges_without_a_vote_count_keep_their_value(voted_study, tmp_path):
    """Exported judges are float32 k/3; the BAPPS defaults (train 2, val 5) cannot hold 1/3,
    so n is inferred, and every judge, hence every score, is unchanged."""
    export_bapps(voted_study, tmp_path / "bapps")
    import_bapps(tmp_path / "bapps", "copy")
    copy = Study.objects.get(slug="copy")
    original = judged(voted_study)
    for key, (n_p0, n_p1) in judged(copy).items():
        assert n_p1 / (n_p0 + n_p1) == pytest.approx(original[key][1] / sum(original[key]))
        if n_p1 not in (0, n_p0 + n_p1):
            assert n_p0 + n_p1 == 3
    assert psnr_2afc(copy) == psnr_2afc(voted_study)


def test_metrics_score_and_the_export_run_on_an_imported_study(voted_study, tmp_path):
    export_bapps(voted_study, tmp_path / "bapps")
    import_bapps(tmp_path / "bapps", "copy", votes_per_triplet=3)
    copy = Study.objects.get(slug="copy")
    scores, _ = score_metrics(load_triplets(copy), {})
    expected, _ = score_metrics(load_triplets(voted_study), {})
    assert scores == pytest.approx(expected, abs=1e-12) and 0 <= scores["ssim"] <= 1
    again = export_bapps(copy, tmp_path / "again")
    assert again["triplets"] == 12 and again["votes"]["cast"] == again["votes"]["counted"] == 36


def test_vote_counts_follow_the_split_or_the_judges_fraction():
    assert vote_counts(0.5, default=2) == (1, 1)
    assert vote_counts(0.6, default=5) == (2, 3)
    assert vote_counts(0.5, default=5) == (1, 1)  # 2.5 votes cannot be: the smallest n
    assert vote_counts(float(np.float32(2 / 3)), default=2, precision=1.2e-7) == (1, 2)
    assert vote_counts(float(np.float32(0.3)), default=5, precision=1.2e-7) == (7, 3)
    assert vote_counts(0.5, default=None, fixed=5) == (2, 3)  # rounded half up
    with pytest.raises(ValueError, match="not k/n"):
        vote_counts(0.1234567, default=2)


def noise_png(path: Path, size: int = 32, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_bapps(root: Path, triplets: int = 3) -> Path:
    """A small 2AFC category train/synthetic (judges 0, 0.5, 1, ...) and a JND category val/jnd."""
    folder = root / "train" / "synthetic"
    for i in range(triplets):
        stem = f"{i:06d}"
        for kind, seed in (("ref", 3 * i), ("p0", 3 * i + 1), ("p1", 3 * i + 2)):
            noise_png(folder / kind / f"{stem}.png", seed=seed)
        (folder / "judge").mkdir(exist_ok=True)
        np.save(folder / "judge" / f"{stem}.npy", np.array([(i % 3) / 2], dtype=np.float32))
    jnd = root / "val" / "jnd"
    for i in range(2):
        stem = f"{i:06d}"
        noise_png(jnd / "p0" / f"{stem}.png", seed=100 + i)
        noise_png(jnd / "p1" / f"{stem}.png", seed=200 + i)
        (jnd / "same").mkdir(exist_ok=True)
        np.save(jnd / "same" / f"{stem}.npy", np.array([i / 3], dtype=np.float32))
    return root


def test_jnd_pairs_keep_their_same_share_and_2afc_defaults_apply(tmp_path, capsys):
    root = write_bapps(tmp_path / "bapps")
    call_command("import_bapps", str(root), "--slug", "synthetic")
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"study": "synthetic", "triplets": 3, "votes": 6, "stimuli": 6,
                      "references": 3, "jnd_pairs": 2}  # fmt: skip
    study = Study.objects.get(slug="synthetic")
    # Train judges 0, 0.5, 1 are two votes each (BAPPS train).
    assert [(t.n_p0, t.n_p1) for t in voted_triplets(study)] == [(2, 0), (1, 1), (0, 2)]
    pairs = list(JndPair.objects.filter(study=study))
    assert [(p.split, p.category, p.name) for p in pairs] == [
        ("val", "jnd", "000000"), ("val", "jnd", "000001"),
    ]  # fmt: skip
    assert [p.same for p in pairs] == pytest.approx([0, 1 / 3])
    source = np.asarray(Image.open(root / "val" / "jnd" / "p1" / "000001.png"))
    assert np.array_equal(load_pixels(pairs[1].p1), source)


def test_split_option_imports_only_those_splits(tmp_path):
    root = write_bapps(tmp_path / "bapps")
    counts = import_bapps(root, "train-only", splits=["train"])
    assert counts["triplets"] == 3 and counts["jnd_pairs"] == 0
    # One level deeper, like LPIPS's dataset/2afc/train/<category>: found all the same.
    counts = import_bapps(tmp_path, "from-above", splits=["val"])
    assert counts["triplets"] == 0 and counts["jnd_pairs"] == 2


def test_a_folder_of_empty_categories_is_refused(tmp_path, settings):
    for kind in ("ref", "p0", "p1", "judge"):
        (tmp_path / "bapps" / "val" / "empty" / kind).mkdir(parents=True)
    with pytest.raises(ImportRejected, match="category folders hold no files"):
        import_bapps(tmp_path / "bapps", "empty")
    assert_nothing_imported(settings)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _save_judge(value):
    return lambda root: np.save(root / "train/synthetic/judge/000001.npy", value)


def _escape_by_symlink(root: Path) -> None:
    target = root.parent / "outside.png"
    noise_png(target, seed=9)
    link = root / "train/synthetic/p0/000001.png"
    link.unlink()
    link.symlink_to(target)


CORRUPT = {
    "count mismatch": (
        lambda root: _remove(root / "train/synthetic/judge/000002.npy"),
        "train/synthetic/ref/000002.png: no judge/ file with id '000002'",
    ),
    "missing judge folder": (
        lambda root: _remove(root / "train/synthetic/judge"),
        "train/synthetic: no judge/ (2AFC) or same/ (JND) folder",
    ),
    "two values in a judge": (
        _save_judge(np.array([0.1, 0.2])),
        "train/synthetic/judge/000001.npy: holds float64 of shape (2,)",
    ),
    "judge out of range": (
        _save_judge(np.array([1.5], dtype=np.float32)),
        "train/synthetic/judge/000001.npy: judge 1.5 is not in [0, 1]",
    ),
    "integer judge": (
        _save_judge(np.array([1])),
        "train/synthetic/judge/000001.npy: holds int64",
    ),
    "judge not a fraction": (
        _save_judge(np.array([0.1234567])),
        "train/synthetic/judge/000001.npy: judge 0.123457 is not k/n",
    ),
    "judge not npy": (
        lambda root: (root / "train/synthetic/judge/000001.npy").write_bytes(b"\x93NUMPY junk"),
        "train/synthetic/judge/000001.npy: not a readable .npy file",
    ),
    "corrupt image": (
        lambda root: (root / "train/synthetic/p1/000002.png").write_bytes(b"not a png"),
        "train/synthetic/p1/000002.png: not an image",
    ),
    "truncated image": (
        lambda root: (root / "train/synthetic/ref/000001.png").write_bytes(
            (root / "train/synthetic/ref/000001.png").read_bytes()[:200]
        ),
        "train/synthetic/ref/000001.png: image is corrupt",
    ),
    "sizes differ in a triplet": (
        lambda root: noise_png(root / "train/synthetic/p1/000001.png", size=48),
        "train/synthetic/p1/000001.png: 48x48 pixels, but its ref",
    ),
    "symlink out of the folder": (
        _escape_by_symlink,
        "train/synthetic/p0/000001.png: leads outside",
    ),
    "stray file": (
        lambda root: (root / "train/synthetic/ref/notes.txt").write_text("hi"),
        "train/synthetic/ref/notes.txt: expected only",
    ),
    "jnd without same": (
        lambda root: _remove(root / "val/jnd/same"),
        "val/jnd: no judge/ (2AFC) or same/ (JND) folder",
    ),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_a_corrupt_folder_is_refused_naming_the_file_and_nothing_is_left(case, tmp_path, settings):
    root = write_bapps(tmp_path / "bapps")
    corrupt, message = CORRUPT[case]
    corrupt(root)
    with pytest.raises(CommandError) as raised:
        call_command("import_bapps", str(root), "--slug", "broken")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert_nothing_imported(settings)


def assert_nothing_imported(settings) -> None:
    assert not Study.objects.exists()
    for model in (SourceImage, Stimulus, Triplet, RaterSession, Vote, JndPair):
        assert not model.objects.exists(), model
    assert stored_files(settings) == []


def test_an_image_over_the_pixel_limit_is_refused(tmp_path, settings):
    root = write_bapps(tmp_path / "bapps")
    noise_png(root / "train/synthetic/ref/000002.png", size=64)
    settings.MAX_UPLOAD_PIXELS = 40 * 40
    with pytest.raises(ImportRejected, match=r"ref/000002.png: image has too many pixels"):
        import_bapps(root, "big")
    assert_nothing_imported(settings)


def test_a_failure_while_writing_removes_the_stored_files(tmp_path, settings, monkeypatch):
    root = write_bapps(tmp_path / "bapps")

    def fail(*args):
        assert stored_files(settings), "images are stored before the votes are written"
        raise RuntimeError("database went away")

    monkeypatch.setattr(imports, "_write_votes", fail)
    with pytest.raises(RuntimeError, match="went away"):
        import_bapps(root, "half")
    assert_nothing_imported(settings)


def test_bad_arguments_are_one_line_errors(tmp_path):
    root = write_bapps(tmp_path / "bapps")
    with pytest.raises(CommandError, match="no split folder 'test'"):
        call_command("import_bapps", str(root), "--slug", "x", "--split", "train,test")
    with pytest.raises(CommandError, match="no such folder"):
        call_command("import_bapps", str(tmp_path / "nope"), "--slug", "x")
    with pytest.raises(CommandError, match="no BAPPS category folder"):
        call_command("import_bapps", str(tmp_path / "bapps" / "train" / "synthetic" / "ref"),
                     "--slug", "x")  # fmt: skip
    import_bapps(root, "taken")
    with pytest.raises(CommandError, match="'taken' exists already"):
        call_command("import_bapps", str(root), "--slug", "taken")


def test_a_frozen_snapshot_imports_back_through_its_bapps_and_clic_files(voted_study, tmp_path):
    """The round trip researchers do: freeze a snapshot, unpack it, import it as new studies."""
    call_command("snapshot", voted_study.slug, "--out", str(tmp_path / "snap"))
    import_bapps(tmp_path / "snap", "from-bapps", votes_per_triplet=3)
    import_clic(tmp_path / "snap" / "clic.csv", tmp_path / "snap", "from-clic")
    for slug in ("from-bapps", "from-clic"):
        copy = Study.objects.get(slug=slug)
        assert judged(copy) == judged(voted_study)
        assert psnr_2afc(copy) == psnr_2afc(voted_study)
    # A snapshot of the imported study says where its votes came from.
    call_command("snapshot", "from-bapps", "--out", str(tmp_path / "again"))
    card = (tmp_path / "again" / "DATASET.md").read_text()
    assert "**Imported data.**" in card
    assert "Imported data" not in (tmp_path / "snap" / "DATASET.md").read_text()
