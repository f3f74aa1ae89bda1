"""Import published 2AFC data as a study: a BAPPS-layout folder, or a CLIC-style CSV and its images.

An imported study (``Study.origin == "imported"``, status complete) is made of the same rows
as a collected one, so exports, ``analytics.services.score_metrics`` and ``fit_dpl`` read it
unchanged:

- one SourceImage, with one ReferencePatch at (0, 0) covering it, per distinct reference
  image (references are grouped by their pixels: the sha256 of the RGB PNG stored);
- the distinct distorted images shown with a reference become its Stimulus rows, under
  conditions ``imported@k`` (k numbers them per reference: the codec, level and bitrate are
  unknown, so bpp is 0). Each has the Encoding row the schema asks for, pointing at the
  stored PNG itself. Such conditions are refused by ``Condition.validate``: an imported study
  is never generated;
- one Triplet per distinct (reference, p0, p1), with its votes as real Vote rows on regular
  trials of pseudo raters (RaterSession market ``imported``, always included by quality
  control). A triplet's i-th vote belongs to pseudo rater i, so no rater votes twice on one
  triplet, as for collected data.

BAPPS (the LPIPS repository's ``data/dataset/twoafc_dataset.py``): ``<root>/<split>/<category>/{ref,p0,p1,judge}/`` for 2AFC and
``{p0,p1,same}/`` for JND; category folders are found up to three levels down, so the
LPIPS repository's ``dataset/`` (with ``2afc/`` and ``jnd/``) imports as it is. Files pair by
id (file stem), which is what the loader's sorted order pairs when ids sort alike. A judge g
becomes n votes, round(g·n) of them for p1: n is ``votes_per_triplet`` when given, else the
BAPPS count of the split (train 2, val 5; Zhang et al., CVPR 2018) when g·n is a whole number, else
the smallest n ≤ 100 for which it is (a judge k/n keeps its exact value), else the judge is
refused. JND pairs have no reference, so they become ``JndPair`` rows with their "same"
share, outside the analytics.

CLIC (the 2021 challenge's perceptual track CSVs): rows ``O,A,B,T`` of file names under an image folder, an optional
``O,A,B,T`` header; T=0 means people preferred A. Each row is one vote on the triplet
(ref O, p0 A, p1 B). Identical triplets (the same three images), in either format, are one
triplet with the votes added up.

All or nothing: every file is read and checked first (image readable, under the pixel limit,
same size as the rest of its triplet; judges one float in [0, 1]; counts and ids matching;
no path leading outside the folder), each image staged as an RGB PNG in a temporary folder.
Only then are files stored (through Django's storage) and rows written, in one transaction;
if that fails, the stored files are deleted again. A rejection names the first bad file.
"""

import csv
import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction
from django.utils import timezone

import twoafc_codecs
from rating.models import RaterSession, Trial, Vote
from studies.models import (
    IMPORTED_CODEC,
    Condition,
    Encoding,
    JndPair,
    ReferencePatch,
    SourceImage,
    Stimulus,
    Study,
    Triplet,
)
from studies.services import png_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
BAPPS_VOTES = {"train": 2, "val": 5}  # judgments per triplet in BAPPS (Zhang et al., 2018)
MAX_INFERRED_VOTES = 100
MAX_NPY_BYTES = 4096  # a one-value .npy is about 130 bytes
CATEGORY_DEPTH = 3  # <root>/2afc/<split>/<category>
BULK = 2000


class ImportRejected(ValueError):
    """Malformed input. The message names the first bad file; nothing has been written."""


# --- validated input ------------------------------------------------------------------


class _StagedImages:
    """Validated images, decoded once and kept as RGB PNGs in a temporary folder, by sha256."""

    def __init__(self, folder: Path, max_pixels: int):
        self.folder = folder
        self.max_pixels = max_pixels
        self.shapes: dict[str, tuple[int, int]] = {}
        self.labels: dict[str, str] = {}  # the first file seen with these pixels

    def add(self, path: Path, label: str) -> str:
        try:
            pixels = twoafc_codecs.load_rgb(path, max_pixels=self.max_pixels)
        except twoafc_codecs.CodecError as error:
            raise ImportRejected(f"{label}: {error}") from None
        data = png_bytes(pixels)
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.shapes:
            (self.folder / f"{digest}.png").write_bytes(data)
            self.shapes[digest] = pixels.shape[:2]
            self.labels[digest] = label
        return digest

    def path(self, digest: str) -> Path:
        return self.folder / f"{digest}.png"


@dataclass
class _Jnd:
    split: str
    category: str
    name: str
    p0: str
    p1: str
    same: float


@dataclass
class _Plan:
    """Everything an import writes, already validated."""

    images: _StagedImages
    votes: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    jnd: list[_Jnd] = field(default_factory=list)

    def add_votes(self, digests: dict[str, str], labels: dict[str, str], n_p0: int, n_p1: int):
        """Votes on the triplet of ``digests`` (ref, p0, p1), once their sizes agree.

        A triplet met again (same three images) gets the votes added to its own.
        """
        _same_size(self.images, digests, labels)
        counts = self.votes.setdefault((digests["ref"], digests["p0"], digests["p1"]), [0, 0])
        counts[0] += n_p0
        counts[1] += n_p1


def _same_size(images: _StagedImages, digests: dict[str, str], labels: dict[str, str]) -> None:
    first, *others = digests
    height, width = images.shapes[digests[first]]
    for role in others:
        h, w = images.shapes[digests[role]]
        if (h, w) != (height, width):
            raise ImportRejected(
                f"{labels[role]}: {w}x{h} pixels, but its {first} {labels[first]} is "
                f"{width}x{height}; the images of a triplet must have one size"
            )


@contextmanager
def _staging(max_pixels: int | None) -> Iterator[_StagedImages]:
    limit = settings.MAX_UPLOAD_PIXELS if max_pixels is None else max_pixels
    with tempfile.TemporaryDirectory(prefix="twoafc-import-") as folder:
        yield _StagedImages(Path(folder), limit)


def _check_slug(slug: str) -> None:
    try:
        validate_slug(slug)
    except ValidationError:
        raise ImportRejected(f"{slug!r} is not a slug (letters, digits, - and _)") from None
    if len(slug) > Study._meta.get_field("slug").max_length:
        raise ImportRejected(f"slug {slug!r} is too long")
    if Study.objects.filter(slug=slug).exists():
        raise ImportRejected(f"a study with slug {slug!r} exists already")


def _inside(root: Path, path: Path, label: str) -> Path:
    """``path`` resolved, refused when it (through a symlink or ``..``) leads outside ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ImportRejected(f"{label}: leads outside {root}")
    return resolved


def _fraction(path: Path, label: str, what: str) -> tuple[float, float]:
    """The one float in [0, 1] a judge (or same) .npy holds, and its type's precision."""
    if path.stat().st_size > MAX_NPY_BYTES:
        raise ImportRejected(f"{label}: {path.stat().st_size} bytes, too large for one {what}")
    try:
        value = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises many types on a bad header
        raise ImportRejected(f"{label}: not a readable .npy file ({error})") from None
    if not isinstance(value, np.ndarray) or value.size != 1 or value.dtype.kind != "f":
        raise ImportRejected(
            f"{label}: holds {getattr(value, 'dtype', type(value).__name__)} of shape "
            f"{getattr(value, 'shape', '?')}; a {what} file holds one float"
        )
    number = float(value.reshape(-1)[0])
    if not 0.0 <= number <= 1.0:
        raise ImportRejected(f"{label}: {what} {number} is not in [0, 1]")
    return number, float(np.finfo(value.dtype).eps)


def vote_counts(
    judge: float, default: int | None, fixed: int | None = None, precision: float = 1e-12
) -> tuple[int, int]:
    """(n_p0, n_p1) for a judge, the share of votes for p1.

    ``fixed`` n: round(judge·n) votes for p1. Otherwise n is ``default`` if the judge is k/n
    for it, else the smallest n ≤ MAX_INFERRED_VOTES for which it is, up to ``precision``
    (the judge file's float type: 1.2e-7 for float32). Raises ValueError for a judge that is
    no such fraction.
    """
    if fixed is not None:
        n_p1 = int(np.floor(judge * fixed + 0.5))
        return fixed - n_p1, n_p1
    candidates = ([default] if default else []) + list(range(1, MAX_INFERRED_VOTES + 1))
    # Distinct fractions k/n with n ≤ 100 differ by 1e-4 at least: far more than the precision.
    tolerance = max(precision, 1e-12)
    for n in candidates:
        n_p1 = round(judge * n)
        if abs(judge - n_p1 / n) <= tolerance:
            return n - n_p1, n_p1
    raise ValueError(
        f"judge {judge:.6g} is not k/n for any n ≤ {MAX_INFERRED_VOTES}; "
        "give the votes per triplet to round it"
    )


# --- BAPPS ----------------------------------------------------------------------------


def import_bapps(
    root: str | Path,
    slug: str,
    *,
    name: str = "",
    splits: list[str] | None = None,
    votes_per_triplet: int | None = None,
    max_pixels: int | None = None,
) -> dict:
    """Import a BAPPS-layout folder (2AFC and JND) as a new study; returns counts.

    ``splits`` limits the import to those split folders (default: all found);
    ``votes_per_triplet`` turns every judge into that many votes (see ``vote_counts``).
    Raises ImportRejected, naming the first bad file, with nothing written.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImportRejected(f"{root}: no such folder")
    if votes_per_triplet is not None and votes_per_triplet < 1:
        raise ImportRejected("votes per triplet must be at least 1")
    _check_slug(slug)
    categories = _bapps_categories(root)
    if splits:
        missing = sorted(set(splits) - {c.parent.name for c in categories})
        if missing:
            raise ImportRejected(f"{root}: no split folder {missing[0]!r} with BAPPS categories")
        categories = [c for c in categories if c.parent.name in splits]
    with _staging(max_pixels) as images:
        plan = _Plan(images)
        for folder in categories:
            _read_category(plan, root, folder, votes_per_triplet)
        if not plan.votes and not plan.jnd:
            raise ImportRejected(f"{root}: its category folders hold no files")
        found = sorted({f"{c.parent.name}/{c.name}" for c in categories})
        policy = (
            f"{votes_per_triplet} per triplet"
            if votes_per_triplet
            else "train 2 and val 5 per triplet where the judge allows, else the smallest n "
            "making the judge k/n"
        )
        description = (
            f"Imported from the BAPPS folder {root.name!r}: {', '.join(found)}. "
            f"Votes from the judges: {policy}; raters are pseudo raters."
        )
        return _write(plan, slug, name or slug, description)


def _bapps_categories(root: Path) -> list[Path]:
    """Category folders (holding p0/ and p1/) up to CATEGORY_DEPTH levels below ``root``."""
    found, level = [], [root]
    for _ in range(CATEGORY_DEPTH):
        below = []
        for folder in level:
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or not path.is_dir():
                    continue
                label = str(path.relative_to(root))
                _inside(root, path, label)
                kinds = {p.name for p in path.iterdir() if p.is_dir()}
                if kinds & {"ref", "p0", "p1", "judge", "same"}:
                    _check_category_kinds(kinds, label)
                    found.append(path)
                else:
                    below.append(path)
        level = below
    if not found:
        raise ImportRejected(
            f"{root}: no BAPPS category folder (<split>/<category>/ with ref/, p0/, p1/, judge/ "
            "or p0/, p1/, same/)"
        )
    return found


def _check_category_kinds(kinds: set[str], label: str) -> None:
    if "judge" in kinds and "same" in kinds:
        raise ImportRejected(f"{label}: has both judge/ (2AFC) and same/ (JND)")
    if "judge" not in kinds and "same" not in kinds:
        raise ImportRejected(f"{label}: no judge/ (2AFC) or same/ (JND) folder")
    needed = ["p0", "p1", "same"] if "same" in kinds else ["ref", "p0", "p1", "judge"]
    for kind in needed:
        if kind not in kinds:
            raise ImportRejected(f"{label}: no {kind}/ folder")


def _read_category(plan: _Plan, root: Path, folder: Path, votes_per_triplet: int | None) -> None:
    jnd = (folder / "same").is_dir()
    kinds = ("p0", "p1", "same") if jnd else ("ref", "p0", "p1", "judge")
    files = {
        kind: _listing(
            root, folder / kind, (".npy",) if kind in ("judge", "same") else IMAGE_EXTENSIONS
        )
        for kind in kinds
    }
    _check_pairing(root, files)
    split = folder.parent.name
    for stem in sorted(files[kinds[0]]):
        labels = {kind: str(files[kind][stem].relative_to(root)) for kind in kinds}
        paths = {kind: _inside(root, files[kind][stem], labels[kind]) for kind in kinds}
        if jnd:
            same, _ = _fraction(paths["same"], labels["same"], "same share")
            digests = {k: plan.images.add(paths[k], labels[k]) for k in ("p0", "p1")}
            _same_size(plan.images, digests, labels)
            plan.jnd.append(_Jnd(split, folder.name, stem, digests["p0"], digests["p1"], same))
            continue
        judge, precision = _fraction(paths["judge"], labels["judge"], "judge")
        try:
            n_p0, n_p1 = vote_counts(judge, BAPPS_VOTES.get(split), votes_per_triplet, precision)
        except ValueError as error:
            raise ImportRejected(f"{labels['judge']}: {error}") from None
        digests = {k: plan.images.add(paths[k], labels[k]) for k in ("ref", "p0", "p1")}
        plan.add_votes(digests, labels, n_p0, n_p1)


def _listing(root: Path, folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """A kind folder's files by id (file stem); anything else in it is refused."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        label = str(path.relative_to(root))
        if not path.is_file() or path.suffix.lower() not in extensions:
            raise ImportRejected(f"{label}: expected only {'/'.join(extensions)} files here")
        if path.stem in files:
            raise ImportRejected(f"{label}: a second file with id {path.stem!r}")
        files[path.stem] = path
    return files


def _check_pairing(root: Path, files: dict[str, dict[str, Path]]) -> None:
    """Every id in every kind folder, so sorted order pairs the right files."""
    ids = sorted(set().union(*files.values()))
    for stem in ids:
        for kind, by_id in files.items():
            if stem not in by_id:
                have = next(k for k, f in files.items() if stem in f)
                counts = ", ".join(f"{len(f)} in {k}/" for k, f in files.items())
                raise ImportRejected(
                    f"{files[have][stem].relative_to(root)}: no {kind}/ file with id {stem!r} "
                    f"to pair it with ({counts})"
                )


# --- CLIC -----------------------------------------------------------------------------


def import_clic(
    csv_path: str | Path,
    images_dir: str | Path,
    slug: str,
    *,
    name: str = "",
    max_pixels: int | None = None,
) -> dict:
    """Import a CLIC-style ``O,A,B,T`` CSV and the images it names as a new study; returns counts.

    Raises ImportRejected, naming the first bad row or file, with nothing written.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not csv_path.is_file():
        raise ImportRejected(f"{csv_path}: no such file")
    if not images_dir.is_dir():
        raise ImportRejected(f"{images_dir}: no such folder")
    _check_slug(slug)
    with _staging(max_pixels) as images:
        plan = _Plan(images)
        known: dict[str, str] = {}  # file name in the CSV -> digest
        rows = 0
        for line, (o, a, b, t) in _clic_rows(csv_path):
            where = f"{csv_path.name} line {line}"
            digests, labels = {}, {}
            for role, file_name in (("ref", o), ("p0", a), ("p1", b)):
                labels[role] = f"{file_name} ({where})"
                if file_name not in known:
                    path = _clic_file(images_dir, file_name, labels[role])
                    known[file_name] = images.add(path, labels[role])
                digests[role] = known[file_name]
            plan.add_votes(digests, labels, n_p0=int(t == "0"), n_p1=int(t == "1"))
            rows += 1
        if not rows:
            raise ImportRejected(f"{csv_path}: no rows")
        description = (
            f"Imported from the CLIC-style CSV {csv_path.name!r}: {rows} rows, one vote each "
            "(T=0: A preferred); raters are pseudo raters."
        )
        return _write(plan, slug, name or slug, description)


def _clic_rows(csv_path: Path) -> Iterator[tuple[int, tuple[str, str, str, str]]]:
    """(line number, (O, A, B, T)) per row; an O,A,B,T header and blank lines are skipped."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            first = True
            for row in reader:
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                if first and [c.upper() for c in cells[:3]] == ["O", "A", "B"]:
                    first = False
                    continue
                first = False
                where = f"{csv_path.name} line {reader.line_num}"
                if len(cells) != 4:
                    raise ImportRejected(
                        f"{where}: {len(cells)} fields; rows are O,A,B,T (the oracle file, with T)"
                    )
                if cells[3] not in ("0", "1"):
                    raise ImportRejected(f"{where}: T is {cells[3]!r}, not 0 (A preferred) or 1")
                yield reader.line_num, tuple(cells)
        except (UnicodeDecodeError, csv.Error) as error:
            raise ImportRejected(f"{csv_path.name}: not a readable CSV ({error})") from None


def _clic_file(images_dir: Path, file_name: str, label: str) -> Path:
    relative = PurePosixPath(file_name.replace("\\", "/"))
    if not file_name or relative.is_absolute() or ".." in relative.parts:
        raise ImportRejected(f"{label}: not a path inside {images_dir}")
    path = _inside(images_dir, images_dir / relative, label)
    if not path.is_file():
        raise ImportRejected(f"{label}: no such file in {images_dir}")
    return path


# --- writing --------------------------------------------------------------------------


def _write(plan: _Plan, slug: str, name: str, description: str) -> dict:
    """Store the staged images and write every row in one transaction, or nothing."""
    stored: dict[str, str] = {}
    try:
        with transaction.atomic():
            study = Study.objects.create(
                name=name,
                slug=slug,
                description=description,
                origin=Study.Origin.IMPORTED,
                status=Study.Status.COMPLETE,
                patches_per_image=1,
                crop_size=None,
                practice_trials=0,
                sentinel_rate=0,
                min_sentinels=0,
                repeat_rate=0,
                patch_size=_typical_width(plan),
                votes_per_triplet=max((sum(c) for c in plan.votes.values()), default=1),
            )
            for digest in _used_images(plan):
                with open(plan.images.path(digest), "rb") as handle:
                    stored[digest] = default_storage.save(
                        f"imports/{slug}/{digest[:24]}.png", File(handle)
                    )
            counts = _write_rows(study, plan, stored)
    except IntegrityError as error:
        _delete(stored.values())
        raise ImportRejected(f"study {slug!r} could not be written: {error}") from None
    except BaseException:
        _delete(stored.values())
        raise
    return {"study": slug, **counts}


def _delete(names) -> None:
    for name in names:
        default_storage.delete(name)


def _used_images(plan: _Plan) -> list[str]:
    used = dict.fromkeys(d for key in plan.votes for d in key)
    used.update(dict.fromkeys(d for pair in plan.jnd for d in (pair.p0, pair.p1)))
    return list(used)


def _typical_width(plan: _Plan) -> int:
    """The first reference's width (or the first JND image's), as the study's patch size."""
    first = next(iter(plan.votes), None)
    digest = first[0] if first else plan.jnd[0].p0
    return plan.images.shapes[digest][1]


def _write_rows(study: Study, plan: _Plan, stored: dict[str, str]) -> dict:
    images = plan.images
    refs = list(dict.fromkeys(ref for ref, _, _ in plan.votes))
    sources = SourceImage.objects.bulk_create(
        [
            SourceImage(
                study=study,
                name=images.labels[d][:200],
                image=stored[d],
                sha256=d,
                height=images.shapes[d][0],
                width=images.shapes[d][1],
            )
            for d in refs
        ],
        batch_size=BULK,
    )
    patches = ReferencePatch.objects.bulk_create(
        [ReferencePatch(source=s, y=0, x=0, image=s.image.name) for s in sources], batch_size=BULK
    )
    patch_of = {d: (source, patch) for d, source, patch in zip(refs, sources, patches, strict=True)}

    # The distinct distorted images of each reference, numbered k = 0, 1, ... (condition imported@k).
    slots: dict[str, dict[str, int]] = {d: {} for d in refs}
    for ref, p0, p1 in plan.votes:
        for d in (p0, p1):
            slots[ref].setdefault(d, len(slots[ref]))
    width = max(len(s) for s in slots.values()) if slots else 0
    conditions = Condition.objects.bulk_create(
        [Condition(study=study, codec=IMPORTED_CODEC, level=k) for k in range(width)]
    )
    placed = [(ref, d, k) for ref, by_digest in slots.items() for d, k in by_digest.items()]
    encodings = Encoding.objects.bulk_create(
        [
            Encoding(
                source=patch_of[ref][0],
                condition=conditions[k],
                data=stored[d],
                level=k,
                bpp=0.0,
                num_bytes=images.path(d).stat().st_size,
                codec_version=IMPORTED_CODEC,
            )
            for ref, d, k in placed
        ],
        batch_size=BULK,
    )
    stimuli = Stimulus.objects.bulk_create(
        [
            Stimulus(
                patch=patch_of[ref][1],
                condition=conditions[k],
                encoding=encoding,
                image=stored[d],
                codec=IMPORTED_CODEC,
                level=k,
                bpp=0.0,
                codec_version=IMPORTED_CODEC,
            )
            for (ref, d, k), encoding in zip(placed, encodings, strict=True)
        ],
        batch_size=BULK,
    )
    stimulus_of = {(ref, d): s for (ref, d, _), s in zip(placed, stimuli, strict=True)}

    triplets = Triplet.objects.bulk_create(
        [
            Triplet(
                study=study,
                patch=patch_of[ref][1],
                p0=stimulus_of[ref, p0],
                p1=stimulus_of[ref, p1],
                assigned=sum(counts),
            )
            for (ref, p0, p1), counts in plan.votes.items()
        ],
        batch_size=BULK,
    )
    votes = _write_votes(study, triplets, list(plan.votes.values()))
    JndPair.objects.bulk_create(
        [
            JndPair(
                study=study,
                split=j.split[:40],
                category=j.category[:80],
                name=j.name[:200],
                p0=stored[j.p0],
                p1=stored[j.p1],
                same=j.same,
            )
            for j in plan.jnd
        ],
        batch_size=BULK,
    )
    return {
        "triplets": len(triplets),
        "votes": votes,
        "stimuli": len(stimuli),
        "references": len(sources),
        "jnd_pairs": len(plan.jnd),
    }


def _write_votes(study: Study, triplets: list[Triplet], counts: list[list[int]]) -> int:
    """Vote i of a triplet on a regular trial of pseudo rater i: p1 votes first, then p0 votes."""
    raters = max((n_p0 + n_p1 for n_p0, n_p1 in counts), default=0)
    now = timezone.now()
    sessions = RaterSession.objects.bulk_create(
        [
            RaterSession(
                study=study,
                market=RaterSession.Market.IMPORTED,
                finished_at=now,
                rater_hash=hashlib.sha256(f"imported:{study.slug}:{i}".encode()).hexdigest(),
                quality_override=RaterSession.QualityOverride.INCLUDE,
            )
            for i in range(raters)
        ]
    )
    next_index = [0] * raters
    trials, choices = [], []
    for triplet, (n_p0, n_p1) in zip(triplets, counts, strict=True):
        for i, chose_p1 in enumerate([True] * n_p1 + [False] * n_p0):
            trials.append(
                Trial(
                    session=sessions[i],
                    index=next_index[i],
                    kind=Trial.Kind.REGULAR,
                    triplet=triplet,
                    p1_on_left=False,
                )
            )
            choices.append(chose_p1)
            next_index[i] += 1
    trials = Trial.objects.bulk_create(trials, batch_size=BULK)
    Vote.objects.bulk_create(
        [
            Vote(
                trial=trial,
                client_id=uuid.uuid4(),
                side="right" if chose_p1 else "left",
                chose_p1=chose_p1,
                rt_ms=0.0,
                display_mode=IMPORTED_CODEC,
            )
            for trial, chose_p1 in zip(trials, choices, strict=True)
        ],
        batch_size=BULK,
    )
    return len(trials)
