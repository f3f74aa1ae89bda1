"""Generation: whole-image encodes, patches cut from the decode, exact bpp, triplets per patch."""

import io
import itertools

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from PIL import Image

import twoafc_codecs
from studies import services
from studies.models import Encoding, GenerationJob, Stimulus, Study
from tests.conftest import generate, make_study

pytestmark = pytest.mark.django_db


def pixels(field) -> np.ndarray:
    with field.open("rb") as handle:
        return np.asarray(Image.open(io.BytesIO(handle.read())).convert("RGB"))


def test_it_makes_one_stimulus_per_patch_and_condition(ready_study):
    job = ready_study.latest_job
    assert (job.status, job.done, job.total) == (GenerationJob.Status.DONE, 6, 6)
    stimuli = Stimulus.objects.filter(patch__source__study=ready_study)
    assert stimuli.count() == 2 * 3 * 3  # sources × patches × conditions
    assert {(s.codec, s.level) for s in stimuli} == {("jpeg", 10), ("jpeg", 50), ("webp", 30)}


def test_bpp_is_measured_from_the_bytes_of_the_whole_encode(ready_study):
    for encoding in Encoding.objects.filter(source__study=ready_study):
        data = encoding.data.read()
        assert encoding.num_bytes == len(data)
        assert encoding.bpp == pytest.approx(8 * len(data) / (256 * 256))
        assert encoding.codec_version
        for stimulus in encoding.stimuli.all():
            assert (stimulus.bpp, stimulus.codec_version) == (encoding.bpp, encoding.codec_version)


def test_patches_are_cut_from_the_decoded_whole_image(ready_study):
    stimulus = Stimulus.objects.filter(
        patch__source__study=ready_study, codec="jpeg", level=10
    ).first()
    decoded = twoafc_codecs.get_codec("jpeg").decode(stimulus.encoding.data.read())
    patch = stimulus.patch
    expected = decoded[patch.y : patch.y + 64, patch.x : patch.x + 64]
    assert np.array_equal(pixels(stimulus.image), expected)
    assert not np.array_equal(pixels(stimulus.image), pixels(patch.image))


def test_lower_quality_gives_fewer_bits(ready_study):
    bpp = {
        e.condition.level: e.bpp
        for e in Encoding.objects.filter(condition__codec="jpeg", source__name="astronaut.png")
    }
    assert bpp[10] < bpp[50]


def test_triplets_pair_two_stimuli_of_the_same_patch(ready_study):
    triplets = list(ready_study.triplets.select_related("p0", "p1"))
    assert len(triplets) == 6 * 3  # patches × C(3, 2)
    for triplet in triplets:
        assert triplet.p0.patch_id == triplet.p1.patch_id == triplet.patch_id
        assert triplet.p0_id != triplet.p1_id
    pairs = {
        (t.patch_id, frozenset((t.p0.codec + str(t.p0.level), t.p1.codec + str(t.p1.level))))
        for t in triplets
    }
    assert len(pairs) == len(triplets)


def test_rerunning_every_step_writes_nothing_new(ready_study):
    job = ready_study.latest_job
    before = (Stimulus.objects.count(), Encoding.objects.count(), ready_study.triplets.count())
    assert services.prepare_generation(job.pk) == []
    for source, condition in itertools.product(
        ready_study.sources.all(), ready_study.conditions.all()
    ):
        assert services.encode_chunk(job.pk, source.pk, condition.pk) is False
    services.finish_generation(job.pk)
    assert (
        Stimulus.objects.count(),
        Encoding.objects.count(),
        ready_study.triplets.count(),
    ) == before


def test_an_invalid_condition_is_refused_before_any_job_starts():
    study = make_study(photos=("astronaut",))
    study.conditions.create(
        codec="jpeg2000", level=900
    )  # a stale row that skipped the admin's checks
    with pytest.raises(ValidationError, match="jpeg2000 .* got 900"):
        services.start_generation(study, enqueue=lambda job_id: None)
    assert not GenerationJob.objects.exists()
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT


def test_a_chunk_that_fails_marks_the_job_failed_with_the_error(django_capture_on_commit_callbacks):
    study = make_study(photos=("astronaut",))
    source = study.sources.get()
    with open(source.image.path, "wb") as handle:
        handle.write(b"this is no longer a PNG")
    job = generate(study, django_capture_on_commit_callbacks)
    assert job.status == GenerationJob.Status.FAILED
    assert "CodecError" in job.error
    assert study.status == Study.Status.FAILED
    assert not Stimulus.objects.exists()


def test_a_generated_study_can_be_deleted_with_everything_in_it(ready_study):
    ready_study.delete()
    assert not Stimulus.objects.exists() and not Encoding.objects.exists()
