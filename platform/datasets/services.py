"""Export a study in the BAPPS layout that LPIPS's own loader reads, plus one CSV row per vote.

Layout (REFERENCE.md §2): ``<dir>/<split>/<category>/{ref,p0,p1}/<id>.png`` and
``judge/<id>.npy`` holding one float, the fraction of votes for p1. Ids are
zero-padded so every folder sorts the same way; the loader pairs files by
sorted order. Splits are by source image, so no reference is in both.
"""

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rating.models import Trial, pseudonym
from rating.selectors import rater_set, study_votes, voted_triplets
from studies.models import Study

VOTE_COLUMNS = [
    "observer", "session", "reference_id", "condition_1", "condition_2", "selection",
    "rt_ms", "trial_index", "is_sentinel", "is_repeat", "timestamp", "display_mode",
    "triplet", "side", "p0_codec", "p0_level", "p0_bpp", "p1_codec", "p1_level", "p1_bpp",
]  # fmt: skip


def source_split(source_ids: list[int], val_fraction: float = 0.25) -> dict[int, str]:
    """Spread sources over train and val by id: every k-th goes to val, at least one of two or more."""
    ordered = sorted(set(source_ids))
    if len(ordered) < 2:
        return {sid: "train" for sid in ordered}
    n_val = max(1, round(len(ordered) * val_fraction))
    val = set(ordered[:: max(1, len(ordered) // n_val)][:n_val])
    return {sid: ("val" if sid in val else "train") for sid in ordered}


def export_bapps(study: Study, out_dir: str | Path) -> dict:
    """Write the export into ``out_dir`` (which must not exist or be empty); returns counts.

    Everything is written into a temporary folder beside it and renamed at the
    end, so a failure leaves nothing half-written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        counts = _write_export(study, staging)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


def _write_export(study: Study, root: Path) -> dict:
    triplets = list(voted_triplets(study))
    splits = source_split([t.patch.source_id for t in triplets])
    category = study.slug
    counters = {"train": 0, "val": 0}
    for triplet in triplets:
        split = splits[triplet.patch.source_id]
        stem = f"{counters[split]:06d}"
        counters[split] += 1
        folder = root / split / category
        for name, field in (
            ("ref", triplet.patch.image),
            ("p0", triplet.p0.image),
            ("p1", triplet.p1.image),
        ):
            (folder / name).mkdir(parents=True, exist_ok=True)
            with field.open("rb") as src, open(folder / name / f"{stem}.png", "wb") as dst:
                shutil.copyfileobj(src, dst)
        (folder / "judge").mkdir(exist_ok=True)
        judge = triplet.n_p1 / (triplet.n_p0 + triplet.n_p1)
        np.save(folder / "judge" / f"{stem}.npy", np.array([judge], dtype=np.float32))
    votes = write_votes_csv(study, root / "votes.csv")
    info = {
        "study": study.slug,
        "triplets": len(triplets),
        "votes": votes,
        "splits": {split: n for split, n in counters.items() if n},
        "category": category,
        **rater_set(study),
    }
    (root / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def write_votes_csv(study: Study, path: Path) -> int:
    """One row per vote; raters appear only as pseudonyms."""
    rows = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(VOTE_COLUMNS)
        for vote in study_votes(study).iterator(chunk_size=2000):
            trial = vote.trial
            triplet = trial.triplet
            p0, p1 = triplet.p0, triplet.p1
            writer.writerow([
                pseudonym(trial.session.rater_hash), trial.session.token, triplet.patch_id,
                f"{p0.codec}@{p0.level}", f"{p1.codec}@{p1.level}", 2 if vote.chose_p1 else 1,
                round(vote.rt_ms, 1), trial.index, int(trial.kind == Trial.Kind.SENTINEL),
                int(trial.kind == Trial.Kind.REPEAT), vote.created_at.isoformat(), vote.display_mode,
                triplet.pk, vote.side, p0.codec, p0.level, f"{p0.bpp:.5f}", p1.codec, p1.level, f"{p1.bpp:.5f}",
            ])  # fmt: skip
            rows += 1
    return rows
