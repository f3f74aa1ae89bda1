"""Format-specific promises: the JPEG fast path, pinned encoder settings, knob meanings."""

import dataclasses
import io

import numpy as np
import PIL
import pytest
from PIL import Image, features

import twoafc_codecs as tc
from twoafc_codecs import jpeg_turbo

imagecodecs = pytest.importorskip("imagecodecs")
pillow_heif = pytest.importorskip("pillow_heif")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


# --- JPEG: imagecodecs fast path == Pillow, byte for byte ---------------------


def pillow_only(name: str) -> tc.Codec:
    return dataclasses.replace(tc.get_codec(name), fast_path=False)


def test_imagecodecs_makes_pillows_jpeg_bytes_here():
    assert jpeg_turbo.turbo_matches_pillow()
    assert tc.get_codec("jpeg").uses_fast_path()


@pytest.mark.parametrize("name", ["jpeg", "jpeg422", "jpeg444"])
def test_fast_path_bytes_and_pixels_equal_pillow_at_every_quality(name, astronaut512):
    fast, slow = tc.get_codec(name), pillow_only(name)
    assert not slow.uses_fast_path()
    for quality in range(1, 101):
        data = fast.encode(astronaut512, quality)
        assert data == slow.encode(astronaut512, quality), quality
        if quality % 11 == 1:
            np.testing.assert_array_equal(fast.decode(data), slow.decode(data))


@pytest.mark.parametrize("name", ["jpeg", "jpeg422", "jpeg444"])
def test_fast_path_equals_pillow_on_whole_photos_and_odd_sizes(name, photo):
    fast, slow = tc.get_codec(name), pillow_only(name)
    odd = photo[: photo.shape[0] - 1 - photo.shape[0] % 2, :203]  # odd height, odd width
    for image in (photo, odd):
        for quality in (3, 50, 97):
            a, b = tc.encode_image(image, fast, quality), tc.encode_image(image, slow, quality)
            assert a.data == b.data and a.bpp == b.bpp
            np.testing.assert_array_equal(a.decoded, b.decoded)


def test_jpeg_version_names_the_library_that_made_the_bytes():
    fast, slow = tc.get_codec("jpeg"), pillow_only("jpeg")
    library = imagecodecs.jpeg8_version().split()[1].split("/")[0]
    assert fast.version().startswith(f"imagecodecs {imagecodecs.__version__} / libjpeg-turbo ")
    assert library in fast.version()
    assert f"(same bytes as {slow.version()})" in fast.version()
    assert slow.version() == (
        f"Pillow {PIL.__version__} / libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
    )


def test_jpeg_falls_back_to_pillow_when_the_probe_fails(monkeypatch, astronaut512):
    reference = tc.encode_image(astronaut512, "jpeg", 60)
    monkeypatch.setattr(jpeg_turbo, "turbo_matches_pillow", lambda: False)
    codec = tc.get_codec("jpeg")
    assert not codec.uses_fast_path()
    assert codec.version().startswith(f"Pillow {PIL.__version__} / ")
    fallback = tc.encode_image(astronaut512, codec, 60)
    assert fallback.data == reference.data
    np.testing.assert_array_equal(fallback.decoded, reference.decoded)


def test_probe_notices_different_bytes(monkeypatch):
    real = jpeg_turbo.turbo_encode
    monkeypatch.setattr(
        jpeg_turbo, "turbo_encode", lambda image, q, s: real(image, min(q + 1, 100), s)
    )
    jpeg_turbo.turbo_matches_pillow.cache_clear()
    try:
        assert jpeg_turbo.turbo_matches_pillow() is False
    finally:
        monkeypatch.undo()
        jpeg_turbo.turbo_matches_pillow.cache_clear()
    assert jpeg_turbo.turbo_matches_pillow() is True


def test_jpeg_decode_still_converts_grayscale_files(astronaut512):
    buffer = io.BytesIO()
    Image.fromarray(astronaut512).convert("L").save(buffer, "JPEG", quality=90)
    rgb = tc.get_codec("jpeg").decode(buffer.getvalue())
    assert rgb.shape == (512, 512, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


# --- JPEG 2000 with a PSNR target ---------------------------------------------


def test_jpeg2000_db_hits_its_psnr_target(astronaut512):
    codec = tc.get_codec("jpeg2000-db")
    assert (codec.level_min, codec.level_max, codec.higher_is_better) == (10, 60, True)
    for target in (20, 30, 40):
        result = tc.encode_image(astronaut512, codec, target)
        assert result.data[:4] == b"\xff\x4f\xff\x51"  # raw codestream, no JP2 box
        assert psnr(astronaut512, result.decoded) == pytest.approx(target, abs=1.0)


# --- AVIF ---------------------------------------------------------------------


def avif_bytes(image: np.ndarray, quality: int, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "AVIF", quality=quality, **options)
    return buffer.getvalue()


def test_avif_pins_speed_and_one_thread(astronaut512):
    codec = tc.get_codec("avif")
    assert codec.speed == 6 and codec.encoder == "aom"
    image = astronaut512[:256, :256]
    ours = codec.encode(image, 50)
    assert ours == avif_bytes(image, 50, speed=6, max_threads=1, codec="aom")
    # libaom's bytes change with its thread count: leaving max_threads to
    # Pillow's default (the machine's core count) would make them host-dependent.
    assert ours != avif_bytes(image, 50, speed=6, max_threads=2, codec="aom")
    with Image.open(io.BytesIO(ours)) as img:
        assert img.format == "AVIF" and img.size == (256, 256)


def test_avif_version_names_libavif_and_the_av1_encoder():
    from PIL import AvifImagePlugin

    version = tc.get_codec("avif").version()
    assert f"libavif {features.version('avif')}" in version
    assert f"aom {AvifImagePlugin.get_codec_version('aom')}" in version
    assert "speed 6" in version


# --- HEIC ---------------------------------------------------------------------


def test_heic_version_names_libheif_and_x265():
    info = pillow_heif.libheif_info()
    version = tc.get_codec("heic").version()
    assert f"libheif {info['libheif']} / x265 " in version
    assert info["encoders"]["x265"].split("(")[-1].rstrip(")") in version


def test_heic_is_hevc_420_in_a_single_image(astronaut512):
    data = tc.encode_image(astronaut512[:128, :96], "heic", 50).data
    assert pillow_heif.get_file_mimetype(data) == "image/heic"
    heif = pillow_heif.open_heif(io.BytesIO(data))
    assert len(heif) == 1 and heif.size == (96, 128) and heif.mode == "RGB"
    assert heif.info["chroma"] == 420 and heif.info["bit_depth"] == 8
    nclx = heif.info["nclx_profile"]
    assert (nclx["matrix_coefficients"], nclx["full_range_flag"]) == (6, 1)


def test_heic_options_are_fresh_each_call():
    # pillow-heif writes into enc_params; a shared dict would leak between calls.
    codec = tc.get_codec("heic")
    first, second = codec.encode_options(10), codec.encode_options(10)
    assert first == second and first["enc_params"] is not second["enc_params"]
    assert first["enc_params"]["x265:pools"] == "1"


# --- JPEG XL ------------------------------------------------------------------


def test_jpegxl_is_a_bare_codestream_at_effort_7(astronaut512):
    codec = tc.get_codec("jpegxl")
    assert codec.effort == 7 and "effort 7" in codec.version()
    assert imagecodecs.jpegxl_version() in codec.version()
    data = codec.encode(astronaut512[:64, :64], 90)
    assert data[:2] == b"\xff\x0a"  # naked codestream signature
