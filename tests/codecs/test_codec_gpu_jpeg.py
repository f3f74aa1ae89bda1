"""jpeg-nvjpeg: torchvision's JPEG, batched through nvJPEG on CUDA, libjpeg on the CPU."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from skimage import data

import twoafc_codecs as tc
from twoafc_codecs import gpu_jpeg, registry

CODEC = gpu_jpeg.NVJPEG_CODEC


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def chroma_sampling(jpeg: bytes) -> int:
    """Pillow's code for the file's chroma subsampling: 0 = 4:4:4, 2 = 4:2:0."""
    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.format == "JPEG"
        return JpegImagePlugin.get_sampling(img)


@pytest.fixture
def cpu_path(monkeypatch):
    """The CPU fallback, even on a machine with CUDA."""
    monkeypatch.setattr(gpu_jpeg.NvJpegCodec, "device", lambda self: "cpu")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Three same-size photo crops."""
    return [
        data.astronaut()[:256, 128:384].copy(),
        data.chelsea()[:256, 100:356].copy(),
        data.coffee()[100:356, 200:456].copy(),
    ]


def test_registered_and_described():
    before = set(tc.available_codecs())
    try:
        assert gpu_jpeg.register_all() == [CODEC]
        assert tc.get_codec("jpeg-nvjpeg") is CODEC
        assert gpu_jpeg.register_all() == [CODEC]  # idempotent
    finally:
        for name in set(tc.available_codecs()) - before:
            registry._REGISTRY.pop(name, None)
    assert CODEC.label == "JPEG (nvJPEG, batched on GPU)"
    assert (CODEC.level_name, CODEC.level_min, CODEC.level_max) == ("quality", 1, 100)
    assert CODEC.higher_is_better and CODEC.deterministic
    assert CODEC.queue == "gpu"


def test_version_says_which_path(cpu_path):
    import torchvision

    assert CODEC.version() == (
        f"torchvision {torchvision.__version__} libjpeg (CPU fallback), 4:2:0 chroma"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_cpu_fallback_is_used():
    assert CODEC.device() == "cpu"
    assert "libjpeg (CPU fallback)" in CODEC.version()


def test_cpu_round_trip(cpu_path, photo):
    encoded = CODEC.encode(photo, 75)
    assert encoded[:2] == b"\xff\xd8" and encoded[-2:] == b"\xff\xd9"
    assert chroma_sampling(encoded) == 2  # libjpeg's default 4:2:0
    decoded = CODEC.decode(encoded)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    assert psnr(photo, decoded) > 28
    # Any JPEG decoder reads it the same way.
    with Image.open(io.BytesIO(encoded)) as img:
        assert img.size == (photo.shape[1], photo.shape[0])
    result = tc.encode_image(photo, CODEC, 75)
    assert result.data == encoded
    assert result.bpp == 8 * len(encoded) / (photo.shape[0] * photo.shape[1])


def test_cpu_psnr_and_size_rise_with_quality(cpu_path, astronaut512):
    encoded = [CODEC.encode(astronaut512, q) for q in (5, 40, 90)]
    psnrs = [psnr(astronaut512, CODEC.decode(e)) for e in encoded]
    sizes = [len(e) for e in encoded]
    assert psnrs == sorted(psnrs) and len(set(psnrs)) == 3, psnrs
    assert sizes == sorted(sizes) and len(set(sizes)) == 3, sizes
    assert psnrs[-1] > 32


def test_cpu_batch_equals_singles_and_repeats(cpu_path, photos):
    singles = [CODEC.encode(image, 50) for image in photos]
    batch = CODEC.encode_batch(photos, 50)
    assert batch == singles
    assert CODEC.encode_batch([p.copy() for p in photos], 50) == batch  # deterministic
    decoded = CODEC.decode_batch(batch)
    for item, image in zip(singles, decoded, strict=True):
        np.testing.assert_array_equal(image, CODEC.decode(item))
    # Mixed sizes are fine too, in order.
    odd = data.camera()[:70, :90, None].repeat(3, axis=2)
    mixed = CODEC.encode_batch([photos[0], odd], 50)
    assert mixed == [singles[0], CODEC.encode(odd, 50)]
    assert [d.shape for d in CODEC.decode_batch(mixed)] == [(256, 256, 3), (70, 90, 3)]
    assert CODEC.encode_batch([], 50) == [] and CODEC.decode_batch([]) == []


def test_bad_input_is_a_codec_error(cpu_path, photos):
    for level in (0, 101, 50.0, True):
        with pytest.raises(tc.CodecError):
            CODEC.encode(photos[0], level)
    with pytest.raises(tc.CodecError, match="uint8"):
        CODEC.encode_batch([np.zeros((16, 16, 3), np.float32)], 50)
    with pytest.raises(tc.CodecError, match="not a JPEG"):
        CODEC.decode(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(tc.CodecError, match="jpeg-nvjpeg cannot decode"):
        CODEC.decode(CODEC.encode(photos[0], 50)[:200])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_gpu_batch_of_16(astronaut512):
    assert CODEC.device() == "cuda"
    assert " nvJPEG (CUDA " in CODEC.version()
    rng = np.random.default_rng(0)
    images = []
    for i in range(16):  # jittered 512x512 variants of one photo
        shifted = np.roll(astronaut512, (int(rng.integers(-40, 40)), 9 * i), axis=(0, 1))
        images.append(np.ascontiguousarray(shifted if i % 2 else shifted[:, ::-1]))
    encoded = CODEC.encode_batch(images, 90)
    assert len(encoded) == 16
    assert CODEC.encode_batch(images, 90) == encoded  # repeatable on the GPU
    assert {chroma_sampling(e) for e in encoded} == {0}  # nvJPEG path: 4:4:4, as version() says
    decoded = CODEC.decode_batch(encoded)
    for image, out in zip(images, decoded, strict=True):
        assert out.shape == (512, 512, 3) and out.dtype == np.uint8
        assert psnr(image, out) > 32
    # Singles give the same bytes as the batch.
    assert CODEC.encode(images[3], 90) == encoded[3]
