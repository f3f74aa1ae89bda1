"""Write a study's frozen votes as a dataset, one file at a time, into a sink.

What a snapshot holds (paths relative to its root):

- ``<split>/<category>/{ref,p0,p1}/<id>.png`` and ``judge/<id>.npy`` (LPIPS repository,
  ``data/dataset/twoafc_dataset.py``):
  the BAPPS layout LPIPS's ``TwoAFCDataset`` loads, split into train/val by source
  image. Ids are zero-padded, so the four folders sort alike; a judge holds one
  float, the fraction of counted votes for p1.
- ``votes.csv`` and ``votes.parquet``: one row per non-practice vote of every rater,
  in the long-format columns of Mantiuk's pwcmp toolbox, plus both sides' codec, level and
  bpp and the rater's quality flags. Rater and session ids are HMACs keyed by the
  snapshot's salt: stable within a snapshot, meaningless outside it.
- ``stimuli.csv``: per image, its codec, level, bpp, source, patch position and sha256.
- ``clic.csv``: CLIC-style rows ``O,A,B,T`` (paths of reference, p0, p1), one per
  counted vote, T=0 when the rater preferred A.
- ``DATASET.md``: the dataset card. ``MANIFEST``: ``<sha256>  <path>`` of every other
  file, sorted; its own sha256 is the snapshot's content hash.

Only votes with id <= the cutoff are read, so a rebuild gives the same files and
later votes never reach an old snapshot. Memory stays bounded: rows stream from
the database in chunks and images are copied in chunks.
"""

import csv
import hashlib
import hmac
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.core.files import File
from django.core.files.storage import Storage, default_storage
from django.db.models import Count, Q, QuerySet

from analytics.scoring import human_ceiling
from rating.models import Trial, Vote
from rating.selectors import count_rows, counted_sessions, vote_counts
from studies.models import Stimulus, Study, Triplet

CHUNK = 1 << 20

VOTE_COLUMNS = [
    "observer", "session", "reference_id", "condition_1", "condition_2", "selection",
    "rt_ms", "trial_index", "is_sentinel", "is_repeat", "timestamp", "display_mode",
    "triplet", "side", "p0_codec", "p0_level", "p0_bpp", "p1_codec", "p1_level", "p1_bpp",
    "rater_flagged", "rater_excluded", "rater_flags", "counted",
]  # fmt: skip
VOTE_SCHEMA = pa.schema([
    ("observer", pa.string()), ("session", pa.string()), ("reference_id", pa.int64()),
    ("condition_1", pa.string()), ("condition_2", pa.string()), ("selection", pa.int8()),
    ("rt_ms", pa.float64()), ("trial_index", pa.int32()), ("is_sentinel", pa.int8()),
    ("is_repeat", pa.int8()), ("timestamp", pa.string()), ("display_mode", pa.string()),
    ("triplet", pa.int64()), ("side", pa.string()), ("p0_codec", pa.string()),
    ("p0_level", pa.int32()), ("p0_bpp", pa.float64()), ("p1_codec", pa.string()),
    ("p1_level", pa.int32()), ("p1_bpp", pa.float64()), ("rater_flagged", pa.int8()),
    ("rater_excluded", pa.int8()), ("rater_flags", pa.string()), ("counted", pa.int8()),
])  # fmt: skip
STIMULUS_COLUMNS = [
    "path", "kind", "image_id", "patch_id", "source", "y", "x", "size",
    "codec", "level", "target_bpp", "bpp", "codec_version", "sha256",
]  # fmt: skip
PARQUET_BATCH = 5000


@dataclass(frozen=True)
class Frozen:
    """What a snapshot freezes: the study, the last vote id it takes, and its salt."""

    study: Study
    name: str
    cutoff: int
    salt: str
    created_at: datetime
    license: str = ""
    citation: str = ""


@dataclass(frozen=True)
class WrittenFile:
    path: str
    size: int
    sha256: str


class Sink(Protocol):
    def put(self, path: str, source: BinaryIO) -> WrittenFile: ...


def _copy_hashing(source: BinaryIO, target: BinaryIO) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


class DirSink:
    """Files go into a local folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, path: str, source: BinaryIO) -> WrittenFile:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            size, sha = _copy_hashing(source, handle)
        return WrittenFile(path, size, sha)


class StorageSink:
    """Files go into a Django storage under ``prefix``; an earlier copy (a rebuild) is replaced.

    Each file passes through a local temporary file, so the storage (S3 included)
    gets a seekable file of known size and memory holds one chunk at a time.
    """

    def __init__(self, prefix: str, storage: Storage = default_storage):
        self.prefix = prefix
        self.storage = storage

    def put(self, path: str, source: BinaryIO) -> WrittenFile:
        name = self.prefix + path
        with tempfile.TemporaryFile() as spool:
            size, sha = _copy_hashing(source, spool)
            spool.seek(0)
            if self.storage.exists(name):
                self.storage.delete(name)
            saved = self.storage.save(name, File(spool, name=os.path.basename(name)))
        if saved != name:
            raise OSError(f"storage stored {name} as {saved}")
        return WrittenFile(path, size, sha)


def frozen_triplets(frozen: Frozen, counted_ids: list[int]) -> QuerySet[Triplet]:
    """Triplets with a counted regular vote up to the cutoff, annotated with ``n_p0``/``n_p1``."""
    counted = Q(
        trials__kind=Trial.Kind.REGULAR,
        trials__vote__isnull=False,
        trials__vote__pk__lte=frozen.cutoff,
        trials__session__in=counted_ids,
    )
    return (
        frozen.study.triplets.annotate(
            n_p0=Count("trials", filter=counted & Q(trials__vote__chose_p1=False)),
            n_p1=Count("trials", filter=counted & Q(trials__vote__chose_p1=True)),
        )
        .filter(Q(n_p0__gt=0) | Q(n_p1__gt=0))
        .select_related("patch__source", "p0", "p1")
        .order_by("pk")
    )


def source_split(source_ids: list[int], val_fraction: float = 0.25) -> dict[int, str]:
    """Spread sources over train and val by id: every k-th goes to val, at least one of two or more."""
    ordered = sorted(set(source_ids))
    if len(ordered) < 2:
        return {sid: "train" for sid in ordered}
    n_val = max(1, round(len(ordered) * val_fraction))
    val = set(ordered[:: max(1, len(ordered) // n_val)][:n_val])
    return {sid: ("val" if sid in val else "train") for sid in ordered}


def pseudonymizer(salt: str) -> Callable[[str, str], str]:
    """``ids(kind, raw)``: an HMAC of a raw id keyed by the snapshot's salt."""

    def ids(kind: str, raw: str) -> str:
        digest = hmac.new(salt.encode(), f"{kind}:{raw}".encode(), hashlib.sha256)
        return kind[0] + digest.hexdigest()[:12]

    return ids


@dataclass
class _Progress:
    total: int
    report: Callable[[int, int], None] | None
    done: int = 0

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.report and (self.done % 50 == 0 or self.done >= self.total):
            self.report(self.done, self.total)


@dataclass
class _Build:
    frozen: Frozen
    sink: Sink
    progress: _Progress
    files: list[WrittenFile] = field(default_factory=list)

    def put(self, path: str, source: BinaryIO) -> WrittenFile:
        written = self.sink.put(path, source)
        self.files.append(written)
        self.progress.step()
        return written

    def put_bytes(self, path: str, data: bytes) -> WrittenFile:
        return self.put(path, io.BytesIO(data))

    def put_path(self, path: str, local: Path) -> WrittenFile:
        with open(local, "rb") as handle:
            return self.put(path, handle)


def write_snapshot(
    frozen: Frozen, sink: Sink, report: Callable[[int, int], None] | None = None
) -> dict:
    """Write every file of the snapshot into ``sink``; returns counts and the file list.

    ``report(done, total)`` is called every few files with the number of files written.
    """
    # Which raters count is read once, so the judges, votes.csv and clic.csv agree even if
    # an admin changes a rater's flag while the snapshot builds.
    counted_ids = list(counted_sessions(frozen.study).values_list("pk", flat=True))
    triplets = frozen_triplets(frozen, counted_ids)
    n_triplets = triplets.count()
    build = _Build(frozen, sink, _Progress(total=4 * n_triplets + 6, report=report))
    bapps = _write_bapps(build, triplets)
    with tempfile.TemporaryDirectory(prefix="twoafc-snapshot-") as tmp:
        local = Path(tmp)
        _write_stimuli(local / "stimuli.csv", bapps["images"])
        votes = _write_vote_tables(
            frozen, counted_ids, local / "votes.csv", local / "votes.parquet"
        )
        _write_clic(frozen, counted_ids, local / "clic.csv", bapps["paths"])
        for name in ("stimuli.csv", "votes.csv", "votes.parquet", "clic.csv"):
            build.put_path(name, local / name)
    ceiling = human_ceiling(bapps["n_p0"], bapps["n_p1"]) if n_triplets else float("nan")
    counts = vote_counts(frozen.study, up_to=frozen.cutoff, counted=counted_ids)
    # The files and the counts are read in separate queries; they must tell the same story.
    in_table = counts["cast"] - counts["practice"]
    if (votes["rows"], votes["counted"]) != (in_table, counts["counted"]):
        raise RuntimeError(
            f"votes.csv has {votes['rows']} rows ({votes['counted']} counted) but the counts "
            f"say {in_table} ({counts['counted']} counted)"
        )
    info = {
        "snapshot": frozen.name,
        "study": frozen.study.slug,
        "triplets": n_triplets,
        "votes": counts,
        "splits": bapps["splits"],
        "category": frozen.study.slug,
        "human_ceiling": None if np.isnan(ceiling) else round(ceiling, 4),
        "rater_counts": votes["raters"],
    }
    build.put_bytes("DATASET.md", dataset_card(frozen, info).encode())
    manifest = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(build.files, key=_path_key))
    build.put_bytes("MANIFEST", manifest.encode())
    return {
        **info,
        "content_hash": hashlib.sha256(manifest.encode()).hexdigest(),
        "files": sorted(build.files, key=_path_key),
    }


def _path_key(written: WrittenFile) -> str:
    return written.path


def _write_bapps(build: _Build, triplets: QuerySet[Triplet]) -> dict:
    study = build.frozen.study
    split_of = source_split(list(study.sources.values_list("pk", flat=True)))
    counters: dict[str, int] = {}
    paths: dict[int, tuple[str, str, str]] = {}  # triplet -> paths of ref, p0, p1
    images: dict[tuple[str, int], dict] = {}  # (kind, id) -> stimuli.csv row
    n_p0, n_p1 = [], []
    for triplet in triplets.iterator(chunk_size=500):
        split = split_of[triplet.patch.source_id]
        stem = f"{counters.get(split, 0):06d}"
        counters[split] = counters.get(split, 0) + 1
        folder = f"{split}/{study.slug}"
        written = []
        for role, kind, image in (
            ("ref", "reference", triplet.patch),
            ("p0", "stimulus", triplet.p0),
            ("p1", "stimulus", triplet.p1),
        ):
            extension = os.path.splitext(image.image.name)[1] or ".png"
            path = f"{folder}/{role}/{stem}{extension}"
            with image.image.open("rb") as source:
                copy = build.put(path, source)
            written.append(path)
            images.setdefault((kind, image.pk), _image_row(kind, image, triplet, copy))
        judge = triplet.n_p1 / (triplet.n_p0 + triplet.n_p1)
        buffer = io.BytesIO()
        np.save(buffer, np.array([judge], dtype=np.float32))
        build.put_bytes(f"{folder}/judge/{stem}.npy", buffer.getvalue())
        paths[triplet.pk] = tuple(written)
        n_p0.append(triplet.n_p0)
        n_p1.append(triplet.n_p1)
    return {"splits": counters, "paths": paths, "images": images, "n_p0": n_p0, "n_p1": n_p1}


def _image_row(kind: str, image, triplet: Triplet, copy: WrittenFile) -> dict:
    patch = triplet.patch
    row = {"path": copy.path, "kind": kind, "image_id": image.pk, "patch_id": patch.pk,
           "source": patch.source.name, "y": patch.y, "x": patch.x,
           "size": copy.size, "sha256": copy.sha256}  # fmt: skip
    if kind == "stimulus":
        row.update(codec=image.codec, level=image.level, target_bpp=image.target_bpp,
                   bpp=f"{image.bpp:.5f}", codec_version=image.codec_version)  # fmt: skip
    return row


def _write_stimuli(path: Path, images: dict) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, STIMULUS_COLUMNS)
        writer.writeheader()
        for key in sorted(images):
            writer.writerow(images[key])


# What votes.csv needs of a vote, its trial and its triplet: plain columns, no model
# instances (building six of them per vote was most of a large snapshot's build time).
_VOTE_FIELDS = (
    "trial__session_id", "trial__triplet__patch_id", "trial__triplet__p0__codec",
    "trial__triplet__p0__level", "trial__triplet__p1__codec", "trial__triplet__p1__level",
    "chose_p1", "rt_ms", "trial__index", "trial__kind", "created_at", "display_mode",
    "trial__triplet_id", "side", "trial__triplet__p0__bpp", "trial__triplet__p1__bpp",
)  # fmt: skip


def _session_columns(frozen: Frozen, counted_ids: list[int]) -> dict[int, tuple]:
    """Per session of the study: rater and session pseudonyms, flagged, excluded, flags, counted."""
    ids = pseudonymizer(frozen.salt)
    counted_ids = set(counted_ids)
    # study too: the related manager reads it on every row, and a deferred field costs a query.
    sessions = frozen.study.sessions.only(
        "pk", "study", "rater_hash", "token", "flagged", "flags", "quality_override"
    )
    return {
        session.pk: (
            ids("rater", session.rater_hash),
            ids("session", str(session.token)),
            int(session.flagged),
            int(session.excluded),
            ";".join(sorted(session.flags or [])),
            int(session.pk in counted_ids),
        )
        for session in sessions.iterator(chunk_size=2000)
    }


def _write_vote_tables(
    frozen: Frozen, counted_ids: list[int], csv_path: Path, parquet_path: Path
) -> dict:
    """votes.csv and votes.parquet in one pass; returns the row counts and the raters."""
    sessions = _session_columns(frozen, counted_ids)
    voted: set[int] = set()
    votes = (
        Vote.objects.filter(trial__session__study=frozen.study, pk__lte=frozen.cutoff)
        .exclude(trial__kind=Trial.Kind.PRACTICE)
        .order_by("pk")
        .values_list(*_VOTE_FIELDS)
    )
    rows = counted = 0
    batch: list[list] = []
    with (
        open(csv_path, "w", newline="") as handle,
        pq.ParquetWriter(parquet_path, VOTE_SCHEMA) as parquet,
    ):
        writer = csv.writer(handle)
        writer.writerow(VOTE_COLUMNS)
        for (session_pk, patch_id, p0_codec, p0_level, p1_codec, p1_level, chose_p1, rt_ms,
             index, kind, created_at, display_mode, triplet_id, side, p0_bpp,
             p1_bpp) in votes.iterator(chunk_size=2000):  # fmt: skip
            voted.add(session_pk)
            observer, session_id, flagged, excluded, flags, is_counted = sessions[session_pk]
            row = [
                observer, session_id, patch_id, f"{p0_codec}@{p0_level}",
                f"{p1_codec}@{p1_level}", 2 if chose_p1 else 1, round(rt_ms, 1),
                index, int(kind == Trial.Kind.SENTINEL),
                int(kind == Trial.Kind.REPEAT), created_at.isoformat(),
                display_mode, triplet_id, side, p0_codec, p0_level, round(p0_bpp, 5),
                p1_codec, p1_level, round(p1_bpp, 5), flagged, excluded, flags, is_counted,
            ]  # fmt: skip
            writer.writerow(row)
            batch.append(row)
            if len(batch) >= PARQUET_BATCH:
                parquet.write_batch(_record_batch(batch))
                batch = []
            rows += 1
            counted += is_counted and kind == Trial.Kind.REGULAR
        if batch:
            parquet.write_batch(_record_batch(batch))
    voters = [sessions[pk] for pk in voted]
    raters = {
        "in_votes": len(voters),
        "counted": sum(1 for s in voters if s[5]),
        "flagged": sum(1 for s in voters if s[2]),
        "left_out": sum(1 for s in voters if not s[5]),
    }
    return {"rows": rows, "counted": counted, "raters": raters}


def _record_batch(rows: list[list]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(column, type=kind.type)
            for column, kind in zip(columns, VOTE_SCHEMA, strict=True)
        ],
        schema=VOTE_SCHEMA,
    )


def _write_clic(
    frozen: Frozen, counted_ids: list[int], path: Path, paths: dict[int, tuple[str, str, str]]
) -> None:
    """One row per counted regular vote: O, A, B and T (0: the rater preferred A, i.e. p0)."""
    votes = (
        Vote.objects.filter(
            trial__session__in=counted_ids,
            trial__kind=Trial.Kind.REGULAR,
            pk__lte=frozen.cutoff,
        )
        .order_by("pk")
        .values_list("trial__triplet_id", "chose_p1")
    )
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        for triplet_id, chose_p1 in votes.iterator(chunk_size=5000):
            writer.writerow([*paths[triplet_id], int(chose_p1)])


def dataset_card(frozen: Frozen, info: dict) -> str:
    """DATASET.md: how the data was collected, what it holds, and how to cite it."""
    study = frozen.study
    conditions = "\n".join(
        f"| {c.codec} | {c.level if c.level is not None else ''} | "
        f"{c.target_bpp if c.target_bpp is not None else ''} |"
        for c in study.conditions.all()
    )
    versions = sorted(
        set(Stimulus.objects.filter(condition__study=study).values_list("codec", "codec_version"))
    )
    raters = info["rater_counts"]
    splits = ", ".join(f"{split} {n}" for split, n in sorted(info["splits"].items())) or "none"
    ceiling = info["human_ceiling"]
    qc = "left out" if study.exclude_flagged_raters else "kept"
    vote_table = "\n".join(
        f"| {label} | {value} | {rule} |" for _, label, rule, value in count_rows(info["votes"])
    )
    imported = (
        "\n\n**Imported data.** These votes were imported from an existing dataset (BAPPS or "
        "CLIC layout), not collected here: each rater is a pseudo rater standing for one vote "
        "position per triplet, codecs are unknown (`imported@N`) and bpp is 0."
        if study.origin == Study.Origin.IMPORTED
        else ""
    )
    return f"""# {frozen.name}: {study.name}

Two-alternative forced choice (2AFC) judgments: each rater saw a reference patch and two
distorted versions (p0, p1) and picked the one closer to the reference.

- Snapshot: `{frozen.name}`, frozen {frozen.created_at.isoformat()} (votes up to id {frozen.cutoff})
- License: {frozen.license or "not stated"}

## Citation

{frozen.citation or "No citation given."}

## How it was collected

{study.description or ""}{imported}

- Patches: {study.patch_size}×{study.patch_size} px, {study.patches_per_image} per source image,
  cut from a {study.crop_size or "full-image"} px centre crop that each codec encoded whole.
- Display: {study.display_mode}, zoom up to {study.zoom}×.
- Votes wanted per triplet: {study.votes_per_triplet}; trials per session: {study.trials_per_session}.
- Quality control: {study.practice_trials} practice trials (left out), sentinel rate
  {study.sentinel_rate:g} with at least {study.min_sentinels} sentinels per session, repeat rate
  {study.repeat_rate:g}. A session was screened out when its sentinel answers had probability
  at most {study.qc_screen_out_alpha:g} for a rater right {study.qc_careful_accuracy:g} of the
  time (exact one-sided binomial test). Review thresholds: repeat agreement ≥
  {study.qc_min_repeat_agreement:g}, median response time ≥ {study.qc_min_median_rt_ms:g} ms,
  share of responses under {study.qc_fast_rt_ms:g} ms ≤ {study.qc_max_fast_share:g}, share on one
  side ≤ {study.qc_max_side_share:g}.

### Codecs

| codec | level | target bpp |
|---|---|---|
{conditions}

Codec versions: {"; ".join(f"{codec} {version}" for codec, version in versions) or "none"}.

### Raters and exclusions

{raters["in_votes"]} raters cast votes; {raters["flagged"]} were flagged by quality control and
flagged raters are {qc} by the study's setting, so {raters["counted"]} count towards the judges
and {raters["left_out"]} are left out. `votes.csv` still holds every rater's votes, with the
flags (`rater_flagged`, `rater_flags`) and whether they count (`counted`).
Rater and session ids are pseudonyms keyed by this snapshot: stable within it, unrelated to
any crowd-market id and to the ids of other snapshots.

## Counts

- Triplets with counted votes: {info["triplets"]} ({splits}; split by source image)
- Human ceiling (leave-one-out agreement of two raters): {ceiling if ceiling is not None else "n/a"}

Votes, in the words twoafc uses on every page and in its API (cast = practice + sentinel +
repeat + regular; regular = counted + left out):

| votes | number | rule |
|---|---|---|
{vote_table}

`votes.csv` and `votes.parquet` hold every cast vote except practice
({info["votes"]["cast"] - info["votes"]["practice"]} rows); the judges and `clic.csv` hold the
counted votes ({info["votes"]["counted"]}).

## Files

- `<split>/{info["category"]}/ref|p0|p1/<id>.png`, `judge/<id>.npy`: the BAPPS layout that
  LPIPS's `TwoAFCDataset` loads; judge = fraction of counted votes for p1.
- `votes.csv`, `votes.parquet`: one row per vote (pwcmp-style columns; selection 1 = p0, 2 = p1).
- `stimuli.csv`: codec, level, bpp, source, patch position and sha256 of every image.
- `clic.csv`: CLIC-style `O,A,B,T` rows (no header), one per counted vote; T=0: A (p0) preferred.
- `MANIFEST`: sha256 of every file (`sha256sum -c MANIFEST`); its own sha256 is the snapshot's hash.
"""


def copy_out(files: list[WrittenFile], open_file: Callable[[str], BinaryIO], out_dir: Path) -> None:
    """Write ``files`` into the new folder ``out_dir`` (must not exist or be empty), checking
    each sha256; a staging folder beside it is renamed at the end, so a failure leaves nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=out_dir.parent))
    try:
        sink = DirSink(staging)
        for expected in files:
            with open_file(expected.path) as source:
                copy = sink.put(expected.path, source)
            if copy.sha256 != expected.sha256:
                raise OSError(f"{expected.path}: sha256 differs from the snapshot's record")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
