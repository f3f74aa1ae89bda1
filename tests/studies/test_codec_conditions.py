"""Conditions at target bitrates, and GPU-queue codecs (learned, nvJPEG) in the generation pipeline."""

import pytest
import torch
from compressai.models import FactorizedPrior
from django.core.exceptions import ValidationError

from studies import services
from studies.models import Condition, Encoding, GenerationJob, Stimulus, Study
from tests.conftest import generate, make_study
from twoafc_codecs import learned

pytestmark = pytest.mark.django_db


def test_a_target_bitrate_condition_is_met_per_source_and_recorded(
    django_capture_on_commit_callbacks,
):
    study = make_study(photos=("astronaut", "coffee"), crop_size=256, conditions=())
    for codec in ("jpeg", "webp"):
        Condition.objects.create(study=study, codec=codec, target_bpp=0.6)
    job = generate(study, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    encodings = list(Encoding.objects.filter(source__study=study))
    assert len(encodings) == 4
    for encoding in encodings:
        assert encoding.target_bpp == 0.6 and encoding.within_tolerance
        assert abs(encoding.bpp - 0.6) <= 0.05 * 0.6
        assert encoding.search_steps >= 1
    levels = {(e.source_id, e.condition.codec): e.level for e in encodings}
    for stimulus in Stimulus.objects.filter(patch__source__study=study):
        assert stimulus.target_bpp == 0.6
        assert stimulus.level == levels[(stimulus.patch.source_id, stimulus.codec)]
    assert job.encode_s > 0 and job.db_s > 0 and job.storage_s > 0 and job.crop_s > 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"codec": "jpeg", "level": 30, "target_bpp": 0.5}, "a level or a target bpp, not both"),
        ({"codec": "jpeg"}, "give a quality from 1 to 100 .*, or a target bitrate"),
        ({"codec": "webp", "target_bpp": -1.0}, "bits per pixel above 0"),
        ({"codec": "avif", "level": 101}, "avif"),
        ({"codec": "bpg", "target_bpp": 0.5}, "unknown codec"),
    ],
)
def test_a_bad_condition_is_refused_at_configuration_time(fields, message):
    condition = Condition(study=Study.objects.create(name="s"), **fields)
    with pytest.raises(ValidationError, match=message):
        condition.clean()


def test_gpu_codecs_run_batched_on_the_gpu_queue(django_capture_on_commit_callbacks):
    study = make_study(
        photos=("astronaut", "chelsea", "coffee"), crop_size=128, patches_per_image=2, conditions=()
    )
    Condition.objects.create(study=study, codec="jpeg", level=30)
    nvjpeg = Condition.objects.create(study=study, codec="jpeg-nvjpeg", level=30)
    job = GenerationJob.objects.create(study=study)
    chunks = services.prepare_generation(job.pk)
    gpu = [c for c in chunks if c.queue == "gpu"]
    assert len(gpu) == 1 and gpu[0].condition_id == nvjpeg.pk and len(gpu[0].source_ids) == 3
    assert sum(c.queue == "cpu" for c in chunks) == 3

    job = generate(study, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    made = Stimulus.objects.filter(codec="jpeg-nvjpeg")
    assert made.count() == 6
    # Without CUDA the codec runs on this CPU and says so in every stimulus.
    assert all("CPU fallback" in s.codec_version for s in made) != torch.cuda.is_available()


def test_gpu_codecs_are_refused_on_a_cpu_worker_when_configured(
    settings, django_capture_on_commit_callbacks
):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    settings.TWOAFC_GPU_FALLBACK_CPU = False
    study = make_study(photos=("astronaut",), crop_size=128, patches_per_image=2, conditions=())
    Condition.objects.create(study=study, codec="jpeg", level=30)
    Condition.objects.create(study=study, codec="jpeg-nvjpeg", level=30)
    job = generate(study, django_capture_on_commit_callbacks)
    assert job.status == "failed"
    assert "no GPU" in job.error and "TWOAFC_GPU_FALLBACK_CPU" in job.error


def test_a_learned_codec_makes_stimuli_with_entropy_coded_bits(
    tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    torch.manual_seed(0)
    model = FactorizedPrior(N=16, M=24)
    model.update(force=True)
    monkeypatch.setenv("TWOAFC_CODEC_WEIGHTS", str(tmp_path))
    torch.save(model.state_dict(), tmp_path / learned.checkpoint_name("bmshj2018-factorized", 2))
    study = make_study(
        photos=("astronaut", "coffee"), crop_size=128, patches_per_image=2, conditions=()
    )
    Condition.objects.create(study=study, codec="jpeg", level=30)
    Condition.objects.create(study=study, codec="bmshj2018-factorized", level=2)
    job = generate(study, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    for encoding in Encoding.objects.filter(condition__codec="bmshj2018-factorized"):
        strings_bits = learned.LEARNED_CODECS[0].bits(encoding.data.read())
        assert encoding.bpp == pytest.approx(strings_bits / (128 * 128))
        assert "CompressAI" in encoding.codec_version


def test_a_missing_learned_checkpoint_is_refused_at_configuration_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOAFC_CODEC_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    study = make_study(photos=("astronaut",), crop_size=128, patches_per_image=2, conditions=())
    Condition.objects.create(study=study, codec="jpeg", level=30)
    condition = Condition.objects.create(study=study, codec="mbt2018-mean", level=3)
    with pytest.raises(ValidationError, match=learned.checkpoint_name("mbt2018-mean", 3)):
        condition.clean()
    with pytest.raises(ValidationError, match=learned.checkpoint_name("mbt2018-mean", 3)):
        services.start_generation(study, enqueue=lambda job_id: None)
    assert not GenerationJob.objects.exists()
