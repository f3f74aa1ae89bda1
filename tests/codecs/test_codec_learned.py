"""CompressAI learned codecs, with small random-weight checkpoints made here.

The checkpoints are saved under the zoo's exact file names in a temporary
$TWOAFC_CODEC_WEIGHTS folder, so the real lookup and loader are exercised
without downloading anything. Random weights make poor images; these tests
check the plumbing (container, bits, batching, determinism), not quality.
"""

import hashlib
import io
import shutil

import numpy as np
import pytest
import torch
from skimage import data

import twoafc_codecs as tc
from twoafc_codecs import learned, registry

# CompressAI imported with its torch.jit deprecation warning silenced.
_compressai = learned._compressai()
FactorizedPrior = _compressai.models.FactorizedPrior
ScaleHyperprior = _compressai.models.ScaleHyperprior
model_urls = _compressai.zoo.image.model_urls

QUALITY = 3
NAMES = [
    "bmshj2018-factorized",
    "bmshj2018-hyperprior",
    "mbt2018-mean",
    "mbt2018",
    "cheng2020-anchor",
]


def small_state_dict(cls, seed: int) -> dict:
    torch.manual_seed(seed)
    model = cls(N=16, M=24)
    model.update(force=True)
    return model.state_dict()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """Small random-init checkpoints, saved once, keyed by architecture."""
    folder = tmp_path_factory.mktemp("made")
    made = {}
    for arch, cls in (
        ("bmshj2018-factorized", FactorizedPrior),
        ("bmshj2018-hyperprior", ScaleHyperprior),
    ):
        path = folder / f"{arch}.pth"
        torch.save(small_state_dict(cls, seed=1), path)
        made[arch] = path
    return made


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """An empty $TWOAFC_CODEC_WEIGHTS folder and an empty torch hub cache."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("TWOAFC_CODEC_WEIGHTS", str(folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("TWOAFC_CODEC_DOWNLOAD", raising=False)
    learned.clear_model_cache()
    yield folder
    learned.clear_model_cache()


@pytest.fixture
def registered():
    before = set(tc.available_codecs())
    codecs = learned.register_all()
    yield {c.name: c for c in codecs}
    for name in set(tc.available_codecs()) - before:
        registry._REGISTRY.pop(name, None)


def install(checkpoints, weights, arch, quality=QUALITY):
    path = weights / learned.checkpoint_name(arch, quality)
    shutil.copyfile(checkpoints[arch], path)
    return path


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Three 128x96 photo crops (width 128, height 96: not a multiple of 64)."""
    return [
        data.astronaut()[40:136, 150:278].copy(),
        data.chelsea()[100:196, 150:278].copy(),
        data.coffee()[200:296, 250:378].copy(),
    ]


def strings_of(path, arch, image):
    """compress() run by hand, independently of the codec's container."""
    cls = {"bmshj2018-factorized": FactorizedPrior, "bmshj2018-hyperprior": ScaleHyperprior}[arch]
    model = cls.from_state_dict(torch.load(path, weights_only=True)).eval()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    height, width = image.shape[:2]
    x = torch.nn.functional.pad(x, (0, -width % 64, 0, -height % 64), mode="replicate")
    with torch.inference_mode():
        return [s[0] for s in model.compress(x)["strings"]]


# --- the codecs ----------------------------------------------------------


def test_learned_codecs_are_registered_and_describe_themselves(registered):
    assert sorted(registered) == sorted(NAMES)
    for name in NAMES:
        codec = tc.get_codec(name)
        assert codec is registered[name] and isinstance(codec, tc.Codec)
        assert (codec.level_name, codec.level_min, codec.higher_is_better) == ("quality", 1, True)
        assert codec.level_max == (6 if name == "cheng2020-anchor" else 8)
        assert codec.queue == "gpu"
        assert codec.deterministic
        assert codec.label
        assert codec.version().startswith(f"CompressAI 1.2.8 {name} ")
    assert learned.register_all() == list(registered.values())  # idempotent
    with pytest.raises(tc.CodecError, match="from 1 to 6"):
        tc.validate_setting("cheng2020-anchor", 7)


def test_checkpoint_names_are_the_zoo_url_basenames():
    for name in NAMES:
        top = 6 if name == "cheng2020-anchor" else 8
        for quality in range(1, top + 1):
            url = model_urls[name]["mse"][quality]
            assert learned.checkpoint_name(name, quality) == url.rsplit("/", 1)[1]
    assert learned.checkpoint_name("bmshj2018-factorized", 1) == (
        "bmshj2018-factorized-prior-1-446d5c7f.pth.tar"
    )


def test_round_trip_and_real_entropy_coded_bits(checkpoints, weights, crops):
    arch = "bmshj2018-factorized"
    path = install(checkpoints, weights, arch)
    codec = learned.LEARNED_CODECS[0]
    image = crops[0]
    encoded = codec.encode(image, QUALITY)
    decoded = codec.decode(encoded)
    assert decoded.shape == (96, 128, 3) and decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous

    strings = strings_of(path, arch, image)
    assert codec.bits(encoded) == 8 * sum(len(s) for s in strings)
    assert encoded.endswith(b"".join(strings))  # the header is not counted
    assert len(encoded) * 8 > codec.bits(encoded)
    bpp = codec.bits(encoded) / (96 * 128)
    assert 0 < bpp < 24

    result = tc.encode_image(image, codec, QUALITY)
    assert result.data == encoded
    np.testing.assert_array_equal(result.decoded, decoded)


@pytest.mark.skipif(not hasattr(tc.Codec, "bits"), reason="Codec.bits not in the base class yet")
def test_encode_image_reports_entropy_coded_bpp(checkpoints, weights, crops):
    install(checkpoints, weights, "bmshj2018-factorized")
    codec = learned.LEARNED_CODECS[0]
    result = tc.encode_image(crops[0], codec, QUALITY)
    assert result.bpp == codec.bits(result.data) / (96 * 128)


def test_repeated_encodes_give_the_same_bytes(checkpoints, weights, crops):
    install(checkpoints, weights, "bmshj2018-factorized")
    codec = learned.LEARNED_CODECS[0]
    first = codec.encode(crops[1], QUALITY)
    learned.clear_model_cache()  # a freshly loaded model too
    assert codec.encode(crops[1].copy(), QUALITY) == first
    np.testing.assert_array_equal(codec.decode(first), codec.decode(first))


def test_encode_batch_equals_single_encodes(checkpoints, weights, crops):
    install(checkpoints, weights, "bmshj2018-factorized")
    codec = learned.LEARNED_CODECS[0]
    singles = [codec.encode(image, QUALITY) for image in crops]
    batch = codec.encode_batch(crops, QUALITY)
    assert batch == singles
    decoded = codec.decode_batch(batch)
    for data_, image in zip(singles, decoded, strict=True):
        np.testing.assert_array_equal(image, codec.decode(data_))

    # Mixed sizes are grouped by size and keep their order.
    odd = data.camera()[:70, :90, None].repeat(3, axis=2)
    mixed = codec.encode_batch([crops[0], odd, crops[2]], QUALITY)
    assert mixed == [singles[0], codec.encode(odd, QUALITY), singles[2]]
    assert [d.shape for d in codec.decode_batch(mixed)] == [(96, 128, 3), (70, 90, 3), (96, 128, 3)]
    assert codec.encode_batch([], QUALITY) == [] and codec.decode_batch([]) == []


def test_version_names_the_checkpoint(checkpoints, weights):
    path = install(checkpoints, weights, "bmshj2018-factorized")
    codec = learned.LEARNED_CODECS[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert codec.version(QUALITY) == (
        f"CompressAI 1.2.8 bmshj2018-factorized q{QUALITY} "
        f"(bmshj2018-factorized-prior-3-5c6f152b.pth.tar, sha256 {digest[:16]})"
    )


def test_missing_checkpoint_names_the_file_and_both_folders(weights, tmp_path, monkeypatch):
    codec = learned.LEARNED_CODECS[0]
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(tc.CodecError) as excinfo:
        codec.encode(image, 5)
    message = str(excinfo.value)
    assert "bmshj2018-factorized-prior-5-866ba797.pth.tar" in message
    assert str(weights) in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message
    assert "TWOAFC_CODEC_DOWNLOAD=1" in message and "\n" not in message

    monkeypatch.delenv("TWOAFC_CODEC_WEIGHTS")
    with pytest.raises(tc.CodecError, match=r"\$TWOAFC_CODEC_WEIGHTS \(not set\)"):
        codec.encode(image, 5)
    assert not (tmp_path / "torch-home").exists()  # nothing was downloaded


def test_torch_hub_cache_is_the_second_place_looked(checkpoints, weights, tmp_path, crops):
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copyfile(
        checkpoints["bmshj2018-factorized"],
        hub / learned.checkpoint_name("bmshj2018-factorized", 2),
    )
    codec = learned.LEARNED_CODECS[0]
    assert codec.decode(codec.encode(crops[0], 2)).shape == (96, 128, 3)
    assert learned.find_checkpoint("bmshj2018-factorized", 2) == hub / learned.checkpoint_name(
        "bmshj2018-factorized", 2
    )


def test_the_loader_is_generic_hyperprior(checkpoints, weights, crops):
    arch = "bmshj2018-hyperprior"
    path = install(checkpoints, weights, arch)
    codec = learned.LEARNED_CODECS[1]
    assert codec.arch == arch
    loaded = learned.get_model(arch, QUALITY, "cpu")
    assert isinstance(loaded.model, ScaleHyperprior)
    assert loaded.model.g_a[0].weight.shape[0] == 16  # N read from the tensors
    assert loaded.model.g_a[6].weight.shape[0] == 24  # M too

    batch = codec.encode_batch(crops, QUALITY)
    assert batch == [codec.encode(image, QUALITY) for image in crops]
    strings = strings_of(path, arch, crops[0])
    assert len(strings) == 2  # y and z
    assert codec.bits(batch[0]) == 8 * sum(len(s) for s in strings)
    decoded = codec.decode_batch(batch)
    assert [d.shape for d in decoded] == [(96, 128, 3)] * 3
    np.testing.assert_array_equal(decoded[1], codec.decode(batch[1]))


def test_loader_renames_keys_and_rebuilds_missing_tables(checkpoints, weights, crops):
    arch = "bmshj2018-hyperprior"
    install(checkpoints, weights, arch)
    codec = learned.LEARNED_CODECS[1]
    reference = codec.encode(crops[2], QUALITY)

    # A DataParallel-style checkpoint saved without the entropy coder tables.
    state = torch.load(checkpoints[arch], weights_only=True)
    stripped = {
        f"module.{key}": value
        for key, value in state.items()
        if key.rsplit(".", 1)[1] not in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
    }
    assert len(stripped) < len(state)
    torch.save(stripped, weights / learned.checkpoint_name(arch, QUALITY))
    rebuilt = codec.encode(crops[2], QUALITY)
    assert rebuilt != reference  # the header names other weights (another file hash)...
    assert learned._unpack(rebuilt)[1] == learned._unpack(reference)[1]  # ...same strings
    assert codec.decode(rebuilt).shape == crops[2].shape


def test_decode_rejects_foreign_or_broken_data(checkpoints, weights, crops, tmp_path):
    install(checkpoints, weights, "bmshj2018-factorized")
    install(checkpoints, weights, "bmshj2018-hyperprior")
    factorized, hyperprior = learned.LEARNED_CODECS[:2]
    encoded = factorized.encode(crops[0], QUALITY)

    with pytest.raises(
        tc.CodecError, match="bmshj2018-hyperprior cannot decode bmshj2018-factorized data"
    ):
        hyperprior.decode(encoded)
    with pytest.raises(tc.CodecError, match="cannot decode"):
        factorized.decode(b"\xff\xd8\xff\xe0 a JPEG file")
    with pytest.raises(tc.CodecError, match="truncated"):
        factorized.decode(encoded[:-1])
    with pytest.raises(tc.CodecError, match="cannot decode"):
        factorized.bits(encoded[:10])

    # Other weights under the same file name: refuse rather than decode garbage.
    buffer = io.BytesIO()
    torch.save(small_state_dict(FactorizedPrior, seed=2), buffer)
    (weights / learned.checkpoint_name("bmshj2018-factorized", QUALITY)).write_bytes(
        buffer.getvalue()
    )
    with pytest.raises(tc.CodecError, match="other weights"):
        factorized.decode(encoded)


def test_bad_levels_and_images_are_rejected(weights):
    codec = learned.LEARNED_CODECS[0]
    for level in (0, 9, 3.0, True):
        with pytest.raises(tc.CodecError):
            codec.encode(np.zeros((64, 64, 3), np.uint8), level)
    with pytest.raises(tc.CodecError, match="uint8"):
        codec.encode_batch([np.zeros((64, 64, 3), np.float32)], 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batched_data_decodes_one_at_a_time(checkpoints, weights, crops):
    """On a GPU, bytes from a batched encode must decode alike in any batch."""
    install(checkpoints, weights, "bmshj2018-hyperprior")
    codec = learned.LEARNED_CODECS[1]
    assert codec.device() == "cuda"
    images = crops * 4
    batch = codec.encode_batch(images, QUALITY)
    assert codec.encode_batch(images, QUALITY) == batch
    together = codec.decode_batch(batch)
    for data_, image, original in zip(batch, together, images, strict=True):
        np.testing.assert_array_equal(codec.decode(data_), image)
        assert image.shape == original.shape


def test_download_only_when_allowed(checkpoints, weights, tmp_path, monkeypatch, crops):
    """TWOAFC_CODEC_DOWNLOAD=1 lets the zoo fetch into torch hub's cache (simulated here)."""
    arch = "bmshj2018-factorized"
    calls = []

    def fake_zoo(quality, metric, pretrained):
        calls.append((quality, metric, pretrained))
        hub = tmp_path / "torch-home" / "hub" / "checkpoints"
        hub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoints[arch], hub / learned.checkpoint_name(arch, quality))

    monkeypatch.setitem(_compressai.zoo.image_models, arch, fake_zoo)
    codec = learned.LEARNED_CODECS[0]
    with pytest.raises(tc.CodecError, match="no weights"):
        codec.encode(crops[0], 4)
    assert calls == []
    monkeypatch.setenv("TWOAFC_CODEC_DOWNLOAD", "1")
    assert codec.decode(codec.encode(crops[0], 4)).shape == (96, 128, 3)
    assert calls == [(4, "mse", True)]
    codec.encode(crops[0], 4)
    assert len(calls) == 1  # found in the cache the second time


@pytest.mark.parametrize("arch", ["mbt2018-mean", "mbt2018", "cheng2020-anchor"])
def test_every_architecture_goes_through_the_one_loader(arch, weights, crops):
    cls = _compressai.zoo.image.model_architectures[arch]
    torch.manual_seed(0)
    model = cls(N=16) if arch == "cheng2020-anchor" else cls(N=16, M=24)
    model.update(force=True)
    torch.save(model.state_dict(), weights / learned.checkpoint_name(arch, 2))
    codec = next(c for c in learned.LEARNED_CODECS if c.name == arch)
    first, second = codec.encode_batch([crops[0], crops[0].copy()], 2)
    assert first == second
    assert type(learned.get_model(arch, 2, "cpu").model) is cls
    assert codec.decode(first).shape == (96, 128, 3)
    assert codec.bits(first) == 8 * sum(learned._unpack(first)[0].lengths)
