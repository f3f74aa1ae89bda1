"""Writes for studies: adding sources, and the generation pipeline the Celery tasks drive.

Generation is split into chunks of one source image × one condition. A chunk
writes its Encoding and all its Stimulus rows in one transaction, so an
Encoding row exists exactly when its chunk is complete; progress is counted
from those rows, which makes every step safe to re-run after a worker dies.
"""

import hashlib
import io
import itertools
from collections.abc import Callable

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image

import twoafc_codecs

from .models import (
    Condition,
    Encoding,
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
    is corrupt, is over the pixel limit or is smaller than the study's crop.
    """
    try:
        pixels = twoafc_codecs.load_rgb(data, max_pixels=settings.MAX_UPLOAD_PIXELS)
        twoafc_codecs.center_crop(pixels, study.crop_size)
        twoafc_codecs.patch_positions(
            *_crop_shape(pixels, study.crop_size), study.patch_size, study.patches_per_image, 0
        )
    except twoafc_codecs.CodecError as error:
        raise ValidationError(f"{name}: {error}") from None
    digest = hashlib.sha256(data).hexdigest()
    if study.sources.filter(sha256=digest).exists():
        raise ValidationError(f"{name}: this image is already in the study.")
    source = SourceImage(
        study=study, name=name, sha256=digest, height=pixels.shape[0], width=pixels.shape[1]
    )
    source.image.save(f"{study.slug}/{digest[:16]}.png", ContentFile(png_bytes(pixels)), save=False)
    try:
        source.save()
    except IntegrityError:
        source.image.delete(save=False)
        raise ValidationError(f"{name}: this image is already in the study.") from None
    return source


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
            twoafc_codecs.validate_setting(condition.codec, condition.level)
        except twoafc_codecs.CodecError as error:
            problems.append(str(error))
    if problems:
        raise ValidationError(f"Cannot generate {study}: " + "; ".join(problems) + ".")


def start_generation(study: Study, enqueue: Callable[[int], None]) -> GenerationJob:
    """Record a generation job and hand it to the workers once the row is committed."""
    check_ready_to_generate(study)
    with transaction.atomic():
        job = GenerationJob.objects.create(study=study)
        Study.objects.filter(pk=study.pk).update(status=Study.Status.GENERATING)
        transaction.on_commit(lambda: enqueue(job.pk))
    return job


# --- the pipeline (each step is idempotent) -------------------------------------------


def prepare_generation(job_id: int) -> list[tuple[int, int]]:
    """Cut the reference patches and return the chunks (source id, condition id) still to encode."""
    job = GenerationJob.objects.select_related("study").get(pk=job_id)
    study = job.study
    for source in study.sources.all():
        _cut_reference_patches(study, source)
    conditions = list(study.conditions.values_list("pk", flat=True))
    chunks = [(s, c) for s in study.sources.values_list("pk", flat=True) for c in conditions]
    GenerationJob.objects.filter(pk=job_id).update(
        status=GenerationJob.Status.RUNNING, total=len(chunks)
    )
    done = set(
        Encoding.objects.filter(source__study=study).values_list("source_id", "condition_id")
    )
    return [chunk for chunk in chunks if chunk not in done]


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
                patch.image.save(
                    f"{study.slug}/ref_{source.pk}_{y}_{x}.png",
                    ContentFile(png_bytes(pixels)),
                    save=False,
                )
                stored.append(patch.image.name)
                patch.save()
    except IntegrityError:
        # Another worker cut them first; its rows stand, our files go.
        _delete_files(stored)


def encode_chunk(job_id: int, source_id: int, condition_id: int) -> bool:
    """Encode one source under one condition and cut its stimuli. Returns False if already done."""
    if Encoding.objects.filter(source_id=source_id, condition_id=condition_id).exists():
        return False
    source = SourceImage.objects.select_related("study").get(pk=source_id)
    condition = Condition.objects.get(pk=condition_id)
    study = source.study
    crop = twoafc_codecs.center_crop(load_pixels(source.image), study.crop_size)
    encoded = twoafc_codecs.encode_image(crop, condition.codec, condition.level)
    patches = list(source.patches.all())

    stored: list[str] = []
    try:
        with transaction.atomic():
            encoding = Encoding(
                source=source,
                condition=condition,
                bpp=encoded.bpp,
                num_bytes=len(encoded.data),
                codec_version=encoded.version,
            )
            stem = f"{study.slug}/{source.pk}_{condition.codec}_{condition.level}"
            encoding.data.save(f"{stem}.bin", ContentFile(encoded.data), save=False)
            stored.append(encoding.data.name)
            encoding.save()
            for patch in patches:
                pixels = twoafc_codecs.cut_patch(
                    encoded.decoded, patch.y, patch.x, study.patch_size
                )
                stimulus = Stimulus(
                    patch=patch,
                    condition=condition,
                    encoding=encoding,
                    codec=condition.codec,
                    level=condition.level,
                    bpp=encoded.bpp,
                    codec_version=encoded.version,
                )
                stimulus.image.save(
                    f"{stem}_{patch.pk}.png", ContentFile(png_bytes(pixels)), save=False
                )
                stored.append(stimulus.image.name)
                stimulus.save()
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


def record_progress(job_id: int) -> bool:
    """Recount finished chunks from the database. Returns True when every chunk is done."""
    job = GenerationJob.objects.select_related("study").get(pk=job_id)
    done = Encoding.objects.filter(source__study=job.study, condition__study=job.study).count()
    # Chunks finish concurrently: never let a slower count overwrite a newer one.
    GenerationJob.objects.filter(pk=job_id, done__lt=done).update(done=min(done, job.total))
    return job.total > 0 and done >= job.total


def finish_generation(job_id: int) -> int:
    """Pair the stimuli of each reference patch into triplets; returns how many exist."""
    job = GenerationJob.objects.select_related("study").get(pk=job_id)
    study = job.study
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
    GenerationJob.objects.filter(pk=job_id).update(
        status=GenerationJob.Status.DONE, finished_at=timezone.now()
    )
    Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)
    return study.triplets.count()


def fail_generation(job_id: int, message: str) -> None:
    job = GenerationJob.objects.get(pk=job_id)
    GenerationJob.objects.filter(pk=job_id).update(
        status=GenerationJob.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )
    Study.objects.filter(pk=job.study_id).update(status=Study.Status.FAILED)


def study_counts(study: Study) -> dict:
    from rating.models import Vote

    return {
        "stimuli": Stimulus.objects.filter(patch__source__study=study).count(),
        "triplets": study.triplets.count(),
        "votes": Vote.objects.filter(trial__triplet__study=study).count(),
    }
