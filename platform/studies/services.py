"""Writes for studies: adding sources, and the generation pipeline the Celery tasks drive.

Generation is split into chunks of one condition × one source (a batch of sources on
the GPU queue), recorded as ``GenerationChunk`` rows of the job. Encoding one source
writes its Encoding and all its Stimulus rows in one transaction, so an Encoding row
exists exactly when that work is complete, and re-running any step writes nothing new.
A job counts its own chunks (each once, however often its message is delivered), and
only the study's current job changes the study's state.
"""

import hashlib
import io
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from PIL import Image

import twoafc_codecs
from jobs import services as jobs
from jobs.policy import max_attempts

from .models import (
    Condition,
    Encoding,
    GenerationChunk,
    GenerationJob,
    ReferencePatch,
    SourceImage,
    Stimulus,
    Study,
    Triplet,
)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load_pixels(field_file) -> np.ndarray:
    with field_file.open("rb") as handle:
        return twoafc_codecs.load_rgb(handle.read(), max_pixels=settings.MAX_UPLOAD_PIXELS)


# --- configuring a study --------------------------------------------------------------


def add_source_image(study: Study, data: bytes, name: str) -> SourceImage:
    """Validate an uploaded image and store it as an RGB PNG.

    Raises ValidationError, with nothing stored, for a file that is not an image,
    is corrupt, is over the pixel limit or is smaller than the study's crop. Its
    message is "<name>: <reason>"; ``params`` holds both, for callers that word it
    differently.
    """
    try:
        pixels = twoafc_codecs.load_rgb(data, max_pixels=settings.MAX_UPLOAD_PIXELS)
        twoafc_codecs.center_crop(pixels, study.crop_size)
        twoafc_codecs.patch_positions(
            *_crop_shape(pixels, study.crop_size), study.patch_size, study.patches_per_image, 0
        )
    except twoafc_codecs.CodecError as error:
        raise _refused_image(name, str(error)) from None
    digest = hashlib.sha256(data).hexdigest()
    if study.sources.filter(sha256=digest).exists():
        raise _refused_image(name, "this image is already in the study.")
    source = SourceImage(
        study=study, name=name, sha256=digest, height=pixels.shape[0], width=pixels.shape[1]
    )
    source.image.save(f"{study.slug}/{digest[:16]}.png", ContentFile(png_bytes(pixels)), save=False)
    try:
        source.save()
    except IntegrityError:
        source.image.delete(save=False)
        raise _refused_image(name, "this image is already in the study.") from None
    return source


def _refused_image(name: str, reason: str) -> ValidationError:
    return ValidationError(
        "%(name)s: %(reason)s", code="refused_image", params={"name": name, "reason": reason}
    )


# --- uploads kept across a failed save -------------------------------------------------
#
# A browser cannot refill a file chooser, so when the study form comes back with an error
# the images chosen with it would be lost. They wait here, under a random token that the
# re-shown form carries in a hidden field, and are added to the study only when a save
# succeeds. Nothing is in the study before that.

STAGED_DIR = "staged-uploads"
STAGED_MAX_AGE = timedelta(days=1)  # a form abandoned longer ago is not coming back
_STAGED_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True)
class StagedUpload:
    name: str  # as uploaded
    path: str  # in default_storage
    sha256: str


def _manifest_path(token: str) -> str:
    return f"{STAGED_DIR}/{token}/manifest.json"


def staged_uploads(token: str | None) -> list[StagedUpload]:
    """The files kept under ``token``, in the order chosen; none for a token that names nothing."""
    if not token or not _STAGED_TOKEN.fullmatch(token):
        return []
    try:
        with default_storage.open(_manifest_path(token), "rb") as handle:
            return [StagedUpload(**item) for item in json.load(handle)]
    except (OSError, ValueError, TypeError):
        return []


def stage_uploads(token: str | None, files: list[tuple[str, bytes]]) -> str:
    """Keep ``(name, data)`` files under ``token`` (a new token if it names nothing); return it.

    A file already kept under the token (same bytes) is not kept twice, so choosing
    the same images again after a failed save adds them once.
    """
    discard_stale_staged()
    kept = staged_uploads(token)
    if not kept:
        token = secrets.token_urlsafe(16)
    digests = {upload.sha256 for upload in kept}
    for name, data in files:
        digest = hashlib.sha256(data).hexdigest()
        if digest in digests:
            continue
        digests.add(digest)
        path = default_storage.save(f"{STAGED_DIR}/{token}/{len(kept)}.upload", ContentFile(data))
        kept.append(StagedUpload(name=name, path=path, sha256=digest))
    manifest = json.dumps([upload.__dict__ for upload in kept]).encode()
    default_storage.delete(_manifest_path(token))
    default_storage.save(_manifest_path(token), ContentFile(manifest))
    return token


def read_staged(upload: StagedUpload) -> bytes:
    with default_storage.open(upload.path, "rb") as handle:
        return handle.read()


def discard_staged(token: str | None) -> None:
    uploads = staged_uploads(token)
    if not uploads and not (token and _STAGED_TOKEN.fullmatch(token)):
        return
    _delete_files([upload.path for upload in uploads] + [_manifest_path(token)])
    _delete_folder(f"{STAGED_DIR}/{token}")


def discard_stale_staged(max_age: timedelta = STAGED_MAX_AGE) -> None:
    """Forget uploads kept for forms nobody sent again."""
    try:
        tokens, _ = default_storage.listdir(STAGED_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return
    cutoff = timezone.now() - max_age
    for token in filter(_STAGED_TOKEN.fullmatch, tokens):
        folder = f"{STAGED_DIR}/{token}"
        files = [f"{folder}/{name}" for name in default_storage.listdir(folder)[1]]
        try:
            stale = all(default_storage.get_modified_time(name) < cutoff for name in files)
        except (OSError, NotImplementedError):
            continue
        if stale:
            _delete_files(files)
            _delete_folder(folder)


def _delete_folder(name: str) -> None:
    # The filesystem storage leaves empty folders behind; object stores have none.
    try:
        default_storage.delete(name)
    except OSError:
        pass


def _crop_shape(pixels: np.ndarray, crop_size: int | None) -> tuple[int, int]:
    if crop_size:
        return crop_size, crop_size
    return pixels.shape[0], pixels.shape[1]


def check_ready_to_generate(study: Study) -> None:
    """Every configuration error surfaces here, when the admin presses Generate, not in a worker."""
    problems = []
    if not study.sources.exists():
        problems.append("add at least one source image")
    conditions = list(study.conditions.all())
    if len(conditions) < 2:
        problems.append("add at least two codec conditions (a triplet pairs two distortions)")
    for condition in conditions:
        try:
            condition.validate()
        except twoafc_codecs.CodecError as error:
            problems.append(str(error))
    if problems:
        raise ValidationError(f"Cannot generate {study}: " + "; ".join(problems) + ".")


class NothingToGenerate(ValidationError):
    """Generate was pressed on a ready study that has no new image or condition."""


def chunks_to_do(study: Study) -> tuple[int, int]:
    """(chunks still without an encoding, all chunks): one chunk is a source × a condition."""
    total = study.sources.count() * study.conditions.count()
    done = Encoding.objects.filter(source__study=study, condition__study=study).count()
    return total - done, total


def start_generation(study: Study, enqueue: Callable[[int], None]) -> GenerationJob:
    """Record a generation job and hand it to the workers once the row is committed.

    Starting again also resumes: only chunks without an Encoding are enqueued, so a
    job whose messages were lost (a broker without acknowledgements, a wiped queue)
    is finished by the next one, which supersedes it. A ready study with nothing new
    raises NothingToGenerate, and no job is recorded.
    """
    check_ready_to_generate(study)
    todo, total = chunks_to_do(study)
    if todo == 0 and study.status in (Study.Status.READY, Study.Status.COMPLETE):
        raise NothingToGenerate(
            f"Nothing new to generate: every source image of {study} is already encoded "
            f"under every condition ({total} of {total} done, {study.triplets.count()} "
            "triplets ready). Add images or conditions first."
        )
    with transaction.atomic():
        job = GenerationJob.objects.create(study=study)
        GenerationJob.objects.filter(
            study=study, status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING]
        ).exclude(pk=job.pk).update(
            status=GenerationJob.Status.FAILED,
            error=f"superseded by job {job.pk}",
            finished_at=timezone.now(),
        )
        Study.objects.filter(pk=study.pk).update(status=Study.Status.GENERATING)
        jobs.enqueue_on_commit(job, enqueue)  # job.enqueued: False if the broker is down
    return job


# --- the pipeline (each step is idempotent) -------------------------------------------


def prepare_generation(job_id: int, gpu_batch: int = 16) -> list[GenerationChunk]:
    """Cut the reference patches and record the job's chunks still to encode.

    Run again (a re-claimed job), it replaces the job's unfinished chunks by those still
    missing an Encoding; the messages of the replaced ones then do nothing.
    """
    job = GenerationJob.objects.select_related("study").get(pk=job_id)
    study = job.study
    sources = list(study.sources.values_list("pk", flat=True))
    for source in study.sources.all():
        _cut_reference_patches(study, source)
    conditions = list(study.conditions.all())
    with transaction.atomic():
        # Chunks finishing meanwhile update this row: they wait, and are counted below.
        GenerationJob.objects.select_for_update().filter(pk=job_id).first()
        job.chunks.filter(finished_at=None).delete()
        done = set(
            Encoding.objects.filter(source__study=study).values_list("source_id", "condition_id")
        )
        chunks = []
        for condition in conditions:
            todo = [s for s in sources if (s, condition.pk) not in done]
            if twoafc_codecs.get_codec(condition.codec).queue == "gpu":
                batches = [todo[i : i + gpu_batch] for i in range(0, len(todo), gpu_batch)]
                chunks += [GenerationChunk(job=job, condition=condition, source_ids=batch,
                                           queue="gpu") for batch in batches]  # fmt: skip
            else:
                chunks += [
                    GenerationChunk(job=job, condition=condition, source_ids=[s], queue="cpu")
                    for s in todo
                ]
        chunks = GenerationChunk.objects.bulk_create(chunks)
        total = len(sources) * len(conditions)
        job.set_progress(total - sum(len(c.source_ids) for c in chunks), total, stage="encoding")
    return chunks


def _cut_reference_patches(study: Study, source: SourceImage) -> None:
    if source.patches.exists():
        return
    crop = twoafc_codecs.center_crop(load_pixels(source.image), study.crop_size)
    positions = twoafc_codecs.patch_positions(
        crop.shape[0],
        crop.shape[1],
        study.patch_size,
        study.patches_per_image,
        study.seed + source.pk,
    )
    stored = []
    try:
        with transaction.atomic():
            for y, x in positions:
                patch = ReferencePatch(source=source, y=y, x=x)
                pixels = twoafc_codecs.cut_patch(crop, y, x, study.patch_size)
                name = f"{study.slug}/ref_{source.pk}_{y}_{x}.png"
                patch.image.save(name, ContentFile(png_bytes(pixels)), save=False)
                stored.append(patch.image.name)
                patch.save()
    except IntegrityError:
        # Another worker cut them first; its rows stand, our files go.
        _delete_files(stored)


class Stopwatch:
    """Seconds per stage of a chunk, added to the job's totals when the chunk ends."""

    STAGES = ("encode_s", "crop_s", "storage_s", "db_s")

    def __init__(self):
        self.seconds = dict.fromkeys(self.STAGES, 0.0)

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def add_to(self, job_id: int) -> None:
        GenerationJob.objects.filter(pk=job_id).update(
            **{k: F(k) + v for k, v in self.seconds.items()}
        )


def _encode(
    crop: np.ndarray, condition: Condition
) -> twoafc_codecs.Encoded | twoafc_codecs.RateTargeted:
    if condition.rate_targeted:
        return twoafc_codecs.encode_at_bpp(crop, condition.codec, condition.target_bpp)
    return twoafc_codecs.encode_image(crop, condition.codec, condition.level)


def encode_chunk(job_id: int, source_id: int, condition_id: int) -> bool:
    """Encode one source under one condition and cut its stimuli. Returns False if already done."""
    if Encoding.objects.filter(source_id=source_id, condition_id=condition_id).exists():
        return False
    source = SourceImage.objects.select_related("study").get(pk=source_id)
    condition = Condition.objects.get(pk=condition_id)
    clock = Stopwatch()
    crop = twoafc_codecs.center_crop(load_pixels(source.image), source.study.crop_size)
    with clock.stage("encode_s"):
        encoded = _encode(crop, condition)
    stored = _store_encoding(source, condition, encoded, clock)
    clock.add_to(job_id)
    return stored


def encode_batch(job_id: int, condition_id: int, source_ids: list[int]) -> int:
    """Encode several sources in one pass of a batched (GPU) codec; returns how many were new."""
    condition = Condition.objects.get(pk=condition_id)
    done = set(Encoding.objects.filter(condition=condition).values_list("source_id", flat=True))
    sources = list(
        SourceImage.objects.select_related("study").filter(pk__in=source_ids).exclude(pk__in=done)
    )
    if not sources:
        return 0
    clock = Stopwatch()
    crops = [twoafc_codecs.center_crop(load_pixels(s.image), s.study.crop_size) for s in sources]
    with clock.stage("encode_s"):
        if condition.rate_targeted:  # bisection is per image
            encoded = [_encode(crop, condition) for crop in crops]
        else:
            encoded = twoafc_codecs.encode_images(crops, condition.codec, condition.level)
    new = sum(
        _store_encoding(s, condition, e, clock) for s, e in zip(sources, encoded, strict=True)
    )
    clock.add_to(job_id)
    return new


def require_gpu_or_fallback(fallback_to_cpu: bool) -> None:
    """GPU codecs run on the CPU of a worker without CUDA, unless configured to refuse."""
    if fallback_to_cpu:
        return
    import torch  # deferred: heavy, and only this check needs it

    if not torch.cuda.is_available():
        raise RuntimeError(
            "this worker has no GPU and TWOAFC_GPU_FALLBACK_CPU=0 forbids running GPU codecs on the CPU"
        )


def _store_encoding(
    source: SourceImage,
    condition: Condition,
    result: twoafc_codecs.Encoded | twoafc_codecs.RateTargeted,
    clock: Stopwatch,
) -> bool:
    """Write the encode's bytes and its stimuli in one transaction: all of them or none."""
    search = result if isinstance(result, twoafc_codecs.RateTargeted) else None
    encoded = search.encoded if search else result
    study = source.study
    patches = list(source.patches.all())
    with clock.stage("crop_s"):
        pngs = [
            png_bytes(twoafc_codecs.cut_patch(encoded.decoded, p.y, p.x, study.patch_size))
            for p in patches
        ]
    stem = f"{study.slug}/{source.pk}_{condition.pk}_{condition.codec}_{encoded.level}"
    stored: list[str] = []
    try:
        with transaction.atomic():
            encoding = Encoding(
                source=source, condition=condition, level=encoded.level, target_bpp=condition.target_bpp,
                within_tolerance=search.within_tolerance if search else None,
                search_steps=search.steps if search else None,
                bpp=encoded.bpp, num_bytes=len(encoded.data), codec_version=encoded.version,
            )  # fmt: skip
            with clock.stage("storage_s"):
                encoding.data.save(f"{stem}.bin", ContentFile(encoded.data), save=False)
            stored.append(encoding.data.name)
            with clock.stage("db_s"):
                encoding.save()
            stimuli = []
            for patch, png in zip(patches, pngs, strict=True):
                stimulus = Stimulus(
                    patch=patch, condition=condition, encoding=encoding, codec=condition.codec,
                    level=encoded.level, target_bpp=condition.target_bpp, bpp=encoded.bpp,
                    codec_version=encoded.version,
                )  # fmt: skip
                with clock.stage("storage_s"):
                    stimulus.image.save(f"{stem}_{patch.pk}.png", ContentFile(png), save=False)
                stored.append(stimulus.image.name)
                stimuli.append(stimulus)
            with clock.stage("db_s"):
                Stimulus.objects.bulk_create(stimuli)
    except IntegrityError:
        _delete_files(stored)
        return False  # a concurrent run of the same chunk committed first
    except BaseException:
        _delete_files(stored)
        raise
    return True


def _delete_files(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


def start_chunk(chunk_id: int) -> GenerationChunk | None:
    """Count a task's start on the chunk; None when there is nothing left to do (the chunk is
    finished, or a re-claimed job replaced it). Fails the job once the chunk has been started
    more often than the retry limit allows: a chunk that keeps killing its worker."""
    if not GenerationChunk.objects.filter(pk=chunk_id, finished_at=None).update(
        attempts=F("attempts") + 1
    ):
        return None
    chunk = GenerationChunk.objects.select_related("job", "condition").filter(pk=chunk_id).first()
    if chunk is None:  # replaced by a re-claim of its job in the meantime
        return None
    if chunk.attempts > max_attempts():
        chunk.job.fail(
            f"{chunk.condition} on sources {chunk.source_ids} was started {chunk.attempts} times "
            "without finishing (its worker died each time?)"
        )
        return None
    return chunk


def complete_chunk(chunk_id: int) -> bool:
    """Count a finished chunk towards its job, once. Returns True when that completes the job.

    A chunk of a job that no longer runs (superseded, failed) has still written its encodings,
    which every later job uses, but changes nothing of its job.
    """
    chunk = GenerationChunk.objects.filter(pk=chunk_id).first()
    if chunk is None:  # replaced by a re-claim of its job while it ran: the new one counts
        return False
    running = GenerationJob.objects.filter(pk=chunk.job_id, status=GenerationJob.Status.RUNNING)
    with transaction.atomic():
        # The job row first, as prepare_generation locks it: the two never wait on each other.
        job = running.select_for_update().first()
        if job is None or not GenerationChunk.objects.filter(pk=chunk_id, finished_at=None).update(
            finished_at=timezone.now()
        ):
            return False
        running.update(done=F("done") + len(chunk.source_ids), heartbeat_at=timezone.now())
        return job.done + len(chunk.source_ids) >= job.total


def finish_generation(job_id: int) -> int:
    """Pair the stimuli of each reference patch into triplets, mark the job done and the study
    ready; returns how many triplets the study has. Only a running job that is still the
    study's current one does anything: a superseded job never makes the study ready."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().select_related("study").get(pk=job_id)
        study = job.study
        if job.status != GenerationJob.Status.RUNNING or not job.is_current():
            return study.triplets.count()
        stimuli = Stimulus.objects.filter(patch__source__study=study).order_by(
            "patch_id", "condition_id"
        )
        triplets = []
        for patch_id, group in itertools.groupby(
            stimuli.values("pk", "patch_id"), key=lambda s: s["patch_id"]
        ):
            for first, second in itertools.combinations([s["pk"] for s in group], 2):
                triplets.append(Triplet(study=study, patch_id=patch_id, p0_id=first, p1_id=second))
        Triplet.objects.bulk_create(triplets, ignore_conflicts=True, batch_size=1000)
        job.finish(stage="")
        Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)
        return study.triplets.count()


def fail_generation(job_id: int, error: BaseException | str) -> bool:
    """Fail the job (message and traceback); the study too while this job is its current one.
    A job that no longer runs, or was deleted, is left alone."""
    job = GenerationJob.objects.filter(pk=job_id).first()
    return job is not None and job.fail(error)


def study_counts(study: Study) -> dict:
    """What generation made: stimuli and triplets. Votes belong to the rating app, which
    builds on this one: ``rating.selectors.vote_counts`` counts them."""
    return {
        "stimuli": Stimulus.objects.filter(patch__source__study=study).count(),
        "triplets": study.triplets.count(),
    }


def votes_cast_on(item: Condition | SourceImage) -> int:
    """Votes on triplets showing this condition's stimuli, or this source's patches.

    Deleting the condition or source would delete these votes with it. The votes are reached
    through the triplets' reverse relation (rating's trials), so this app imports nothing of
    the apps built on it.
    """
    if isinstance(item, Condition):
        triplets = Triplet.objects.filter(Q(p0__condition=item) | Q(p1__condition=item))
    else:
        triplets = Triplet.objects.filter(patch__source=item)
    return triplets.aggregate(votes=Count("trials__vote"))["votes"]
