"""Codec registry and the Pillow codecs, exercised on real photographs."""

import numpy as np
import pytest

import twoafc_codecs as tc

PILLOW_NAMES = ["jpeg", "jpeg2000", "jpeg422", "jpeg444", "webp"]

# Three levels per codec, from worst to best quality.
WORST_TO_BEST = {
    "jpeg": [5, 40, 90],
    "jpeg422": [5, 40, 90],
    "jpeg444": [5, 40, 90],
    "jpeg2000": [200, 40, 8],
    "webp": [5, 40, 90],
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_pillow_codecs_are_registered():
    assert tc.available_codecs() == PILLOW_NAMES


@pytest.mark.parametrize("name", PILLOW_NAMES)
def test_codec_describes_itself(name):
    codec = tc.get_codec(name)
    assert isinstance(codec, tc.Codec)
    assert codec.name == name
    assert codec.label and codec.level_name
    assert codec.level_min < codec.level_max
    assert codec.deterministic
    assert codec.version().startswith("Pillow ")
    assert " / " in codec.version()


def test_jpeg2000_level_is_a_compression_ratio():
    codec = tc.get_codec("jpeg2000")
    assert (codec.level_min, codec.level_max, codec.higher_is_better) == (2, 400, False)


@pytest.mark.parametrize("name", PILLOW_NAMES)
def test_quality_and_bitrate_follow_the_level(name, astronaut512):
    results = [tc.encode_image(astronaut512, name, level) for level in WORST_TO_BEST[name]]
    for result, level in zip(results, WORST_TO_BEST[name], strict=True):
        assert result.decoded.shape == (512, 512, 3)
        assert result.decoded.dtype == np.uint8
        assert (result.codec, result.level, result.width, result.height) == (name, level, 512, 512)
        assert result.bpp == 8 * len(result.data) / (512 * 512)
        assert result.version == tc.get_codec(name).version()
    psnrs = [psnr(astronaut512, r.decoded) for r in results]
    bpps = [r.bpp for r in results]
    assert psnrs == sorted(psnrs) and len(set(psnrs)) == 3, psnrs
    assert bpps == sorted(bpps) and len(set(bpps)) == 3, bpps
    assert psnrs[-1] > 32  # the best setting is a faithful copy


def test_jpeg2000_ratio_sets_the_bitrate(astronaut512):
    # Ratio N of a 24-bit image means about 24/N bits per pixel.
    for ratio in (8, 40, 200):
        bpp = tc.encode_image(astronaut512, "jpeg2000", ratio).bpp
        assert bpp == pytest.approx(24 / ratio, rel=0.1)


def test_chroma_subsampling_variants_differ(astronaut512):
    sizes = {
        n: len(tc.encode_image(astronaut512, n, 75).data) for n in ("jpeg", "jpeg422", "jpeg444")
    }
    # Less chroma subsampling keeps more data.
    assert sizes["jpeg"] < sizes["jpeg422"] < sizes["jpeg444"]


@pytest.mark.parametrize("name", PILLOW_NAMES)
def test_whole_photos_of_any_size_round_trip(name, photo):
    result = tc.encode_image(photo, name, WORST_TO_BEST[name][1])
    assert result.decoded.shape == photo.shape
    assert (result.height, result.width) == photo.shape[:2]
    assert psnr(photo, result.decoded) > 25


@pytest.mark.parametrize("name", PILLOW_NAMES)
def test_deterministic_codecs_repeat_their_bytes(name, astronaut512):
    codec = tc.get_codec(name)
    level = WORST_TO_BEST[name][1]
    first = tc.encode_image(astronaut512, name, level)
    second = tc.encode_image(astronaut512.copy(), name, level)
    assert first.data == second.data
    assert codec.encode(astronaut512, level) == first.data
    np.testing.assert_array_equal(codec.decode(first.data), first.decoded)


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_lone_patch_costs_far_more_bits_than_the_whole_image(name, astronaut512):
    """Why stimuli are always cut from a whole encoded image, never encoded alone:
    a 64x64 patch on its own pays the full header cost and loses context."""
    whole = tc.encode_image(astronaut512, name, 10)
    lone = tc.encode_image(tc.cut_patch(astronaut512, 224, 224, 64), name, 10)
    assert lone.bpp > 2 * whole.bpp, (lone.bpp, whole.bpp)
    patch = tc.cut_patch(whole.decoded, 224, 224, 64)
    assert patch.shape == (64, 64, 3)
    # The artefacts differ too: the lone patch is not the same stimulus.
    assert not np.array_equal(patch, lone.decoded)


def test_unknown_codec_lists_known_names(astronaut512):
    with pytest.raises(tc.UnknownCodec) as excinfo:
        tc.encode_image(astronaut512, "jpegxl", 50)
    message = str(excinfo.value)
    assert "'jpegxl'" in message
    for name in PILLOW_NAMES:
        assert name in message
    assert isinstance(excinfo.value, tc.CodecError)
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(tc.UnknownCodec):
        tc.validate_setting("nope", 50)


@pytest.mark.parametrize(
    ("name", "level", "expected"),
    [
        ("jpeg", 0, "from 1 to 100"),
        ("jpeg", 101, "from 1 to 100"),
        ("webp", -1, "from 0 to 100"),
        ("jpeg2000", 1, "from 2 to 400 (higher means lower quality)"),
        ("jpeg2000", 401, "compression ratio"),
        ("jpeg", 50.0, "integer"),
        ("jpeg", "50", "integer"),
        ("jpeg", True, "integer"),
    ],
)
def test_bad_levels_are_rejected_with_the_valid_range(name, level, expected):
    with pytest.raises(tc.CodecError) as excinfo:
        tc.validate_setting(name, level)
    assert expected in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    with pytest.raises(tc.CodecError):
        tc.get_codec(name).encode(np.zeros((16, 16, 3), np.uint8), level)


def test_valid_settings_pass():
    for name in PILLOW_NAMES:
        codec = tc.get_codec(name)
        tc.validate_setting(name, codec.level_min)
        tc.validate_setting(name, codec.level_max)
    assert tc.get_codec("jpeg").validate_level(np.int64(70)) == 70


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((16, 16), np.uint8),
        np.zeros((16, 16, 4), np.uint8),
        np.zeros((16, 16, 3), np.float32),
        np.zeros((0, 16, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_images_must_be_rgb_uint8(image):
    with pytest.raises(tc.CodecError):
        tc.encode_image(image, "jpeg", 50)


def test_decode_rejects_foreign_or_broken_data(astronaut512):
    jpeg = tc.encode_image(astronaut512, "jpeg", 50).data
    with pytest.raises(tc.CodecError, match="webp cannot decode JPEG"):
        tc.get_codec("webp").decode(jpeg)
    with pytest.raises(tc.CodecError, match="cannot decode"):
        tc.get_codec("jpeg").decode(b"not an image at all")


def test_webp_size_limit_is_a_codec_error():
    with pytest.raises(tc.CodecError, match="webp cannot encode a 16384x16"):
        tc.encode_image(np.zeros((16, 16384, 3), np.uint8), "webp", 50)


def test_register_a_new_codec():
    class Identity(tc.Codec):
        def version(self):
            return "identity 1"

        def encode(self, image, level):
            self.validate_level(level)
            return image.shape[0].to_bytes(4, "big") + image.tobytes()

        def decode(self, data):
            height = int.from_bytes(data[:4], "big")
            return np.frombuffer(data[4:], np.uint8).reshape(height, -1, 3).copy()

    codec = Identity(
        name="identity-test", label="Identity", level_name="level", level_min=0, level_max=0
    )
    try:
        assert tc.register(codec) is codec
        assert "identity-test" in tc.available_codecs()
        image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
        result = tc.encode_image(image, "identity-test", 0)
        np.testing.assert_array_equal(result.decoded, image)
        assert result.bpp == 8 * (4 + image.size) / 20
        with pytest.raises(tc.CodecError, match="already registered"):
            tc.register(
                Identity(name="identity-test", label="x", level_name="l", level_min=0, level_max=0)
            )
    finally:
        from twoafc_codecs import registry

        registry._REGISTRY.pop("identity-test", None)


def test_codec_names_are_checked():
    with pytest.raises(tc.CodecError, match="lower-case"):
        tc.get_codec("jpeg").__class__(
            name="JPEG XL",
            label="x",
            level_name="q",
            level_min=1,
            level_max=2,
            pillow_format="JPEG",
            feature="jpg",
            subsampling="4:2:0",
        )
