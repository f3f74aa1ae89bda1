"""Codec registry and the library codecs, exercised on real photographs."""

import importlib.util

import numpy as np
import pytest

import twoafc_codecs as tc
from twoafc_codecs.heif_codecs import HEIF_CODECS
from twoafc_codecs.imagecodecs_codecs import IMAGECODECS_CODECS
from twoafc_codecs.pillow_codecs import PILLOW_CODECS

LIBRARY_CODECS = PILLOW_CODECS + HEIF_CODECS + IMAGECODECS_CODECS
ALL_NAMES = sorted(codec.name for codec in LIBRARY_CODECS)
# The codecs of this library that this machine can run.
NAMES = sorted(codec.name for codec in LIBRARY_CODECS if codec.available())

# Three levels per codec, from worst to best quality.
WORST_TO_BEST = {
    "avif": [10, 50, 90],
    "heic": [10, 40, 80],
    "jpeg": [5, 40, 90],
    "jpeg422": [5, 40, 90],
    "jpeg444": [5, 40, 90],
    "jpeg2000": [200, 40, 8],
    "jpeg2000-db": [20, 30, 40],
    "jpegxl": [5, 40, 90],
    "jpegxr": [5, 40, 90],
    "webp": [5, 40, 90],
}

# What each version string must name: the library that made the bytes.
LIBRARIES = {
    "avif": ["libavif", "aom"],
    "heic": ["libheif", "x265"],
    "jpeg": ["libjpeg-turbo"],
    "jpeg422": ["libjpeg-turbo"],
    "jpeg444": ["libjpeg-turbo"],
    "jpeg2000": ["OpenJPEG"],
    "jpeg2000-db": ["OpenJPEG"],
    "jpegxl": ["libjxl"],
    "jpegxr": ["jxrlib"],
    "webp": ["libwebp"],
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_every_codec_has_test_settings():
    assert set(WORST_TO_BEST) == set(LIBRARIES) == set(ALL_NAMES)


def test_available_codecs_are_registered_and_missing_ones_left_out():
    registered = set(tc.available_codecs())
    for codec in LIBRARY_CODECS:
        assert (codec.name in registered) == codec.available(), codec.name
        if codec.name in registered:
            assert tc.get_codec(codec.name) is codec


def test_this_machine_has_every_codec():
    """The project's environment ships all of them; a missing one is a build problem."""
    assert importlib.util.find_spec("pillow_heif") and importlib.util.find_spec("imagecodecs")
    assert NAMES == ALL_NAMES


def test_unavailable_codecs_are_not_registered():
    from twoafc_codecs import registry
    from twoafc_codecs.pillow_codecs import AvifCodec

    missing = AvifCodec(
        name="avif-missing-encoder",
        label="x",
        level_name="quality",
        level_min=0,
        level_max=100,
        pillow_format="AVIF",
        feature="avif",
        encoder="no-such-av1-encoder",
    )
    assert not missing.available()
    try:
        assert tc.register_available([missing]) == []
        assert "avif-missing-encoder" not in tc.available_codecs()
    finally:
        registry._REGISTRY.pop("avif-missing-encoder", None)


@pytest.mark.parametrize("name", NAMES)
def test_codec_describes_itself(name):
    codec = tc.get_codec(name)
    assert isinstance(codec, tc.Codec)
    assert codec.name == name
    assert codec.label and codec.level_name
    assert codec.level_min < codec.level_max
    assert codec.queue == "cpu"
    version = codec.version()
    assert " / " in version and "\n" not in version
    assert len(version) <= 200  # fits the codec_version database column
    for library in LIBRARIES[name]:
        assert library in version, (library, version)


def test_jpeg2000_level_is_a_compression_ratio():
    codec = tc.get_codec("jpeg2000")
    assert (codec.level_min, codec.level_max, codec.higher_is_better) == (2, 400, False)


@pytest.mark.parametrize("name", NAMES)
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


@pytest.mark.parametrize("name", NAMES)
def test_whole_photos_of_any_size_round_trip(name, photo):
    result = tc.encode_image(photo, name, WORST_TO_BEST[name][1])
    assert result.decoded.shape == photo.shape
    assert result.decoded.dtype == np.uint8
    assert (result.height, result.width) == photo.shape[:2]
    assert result.bpp == 8 * len(result.data) / (photo.shape[0] * photo.shape[1])
    assert psnr(photo, result.decoded) > 25


@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes_round_trip(name, astronaut512):
    odd = astronaut512[50:253, 100:401]  # 301x203, a view with strides
    assert odd.shape == (203, 301, 3)
    results = [tc.encode_image(odd, name, level) for level in WORST_TO_BEST[name][::2]]
    for result in results:
        assert result.decoded.shape == (203, 301, 3)
        assert result.decoded.dtype == np.uint8
        assert (result.width, result.height) == (301, 203)
        assert result.bpp == 8 * len(result.data) / (301 * 203)
    assert psnr(odd, results[0].decoded) < psnr(odd, results[1].decoded)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (17, 15)])
def test_tiny_images_round_trip(name, shape):
    image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
    level = WORST_TO_BEST[name][1]
    if name == "jpegxr" and shape[1] < 17:
        level = 50  # jxrlib's one size limit, tested below
    result = tc.encode_image(image, name, level)
    assert result.decoded.shape == (*shape, 3)
    assert result.decoded.dtype == np.uint8


def test_jpegxr_refuses_narrow_images_where_jxrlib_cannot_code_them(capfd):
    narrow = np.zeros((40, 16, 3), np.uint8)
    with pytest.raises(tc.CodecError, match="jpegxr cannot encode a 16x40 image at quality 49"):
        tc.encode_image(narrow, "jpegxr", 49)
    assert tc.encode_image(narrow, "jpegxr", 50).decoded.shape == (40, 16, 3)
    wide_enough = np.zeros((1, 17, 3), np.uint8)
    assert tc.encode_image(wide_enough, "jpegxr", 1).decoded.shape == (1, 17, 3)
    # The limit is jxrlib's own: without the check it fails (and prints to stdout).
    from twoafc_codecs.imagecodecs_codecs import JpegXrCodec

    unchecked = tc.get_codec("jpegxr")
    assert isinstance(unchecked, JpegXrCodec)
    with pytest.raises(tc.CodecError, match="WMP_errFail"):
        super(JpegXrCodec, unchecked).encode(narrow, 49)
    capfd.readouterr()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_flag_is_true_exactly_where_repeat_encodes_agree(name, astronaut512):
    codec = tc.get_codec(name)
    level = WORST_TO_BEST[name][1]
    repeats = tc.check_determinism(codec, astronaut512, level)
    assert repeats == codec.deterministic
    first = tc.encode_image(astronaut512, name, level)
    if codec.deterministic:
        assert codec.encode(astronaut512, level) == first.data
    np.testing.assert_array_equal(codec.decode(first.data), first.decoded)


def test_check_determinism_catches_codecs_that_vary():
    import os

    class Noisy(tc.Codec):
        def version(self):
            return "noisy 1"

        def encode(self, image, level):
            return os.urandom(16)

        def decode(self, data):
            return np.zeros((1, 1, 3), np.uint8)

    noisy = Noisy(name="noisy", label="x", level_name="l", level_min=0, level_max=0)
    image = np.zeros((8, 8, 3), np.uint8)
    assert tc.check_determinism(noisy, image, 0) is False
    assert tc.check_determinism("jpeg", image, 50) is True


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
        tc.encode_image(astronaut512, "jpeg-xs", 50)
    message = str(excinfo.value)
    assert "'jpeg-xs'" in message
    for name in NAMES:
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
        ("jpeg2000-db", 9, "PSNR target in dB must be from 10 to 60"),
        ("avif", 101, "from 0 to 100"),
        ("heic", 0, "from 1 to 100"),
        ("jpegxl", 0, "from 1 to 100"),
        ("jpegxr", 101, "from 1 to 100"),
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
    for name in NAMES:
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
    with pytest.raises(tc.CodecError, match="avif cannot decode JPEG"):
        tc.get_codec("avif").decode(jpeg)
    for name in NAMES:
        with pytest.raises(tc.CodecError, match=f"{name} cannot decode"):
            tc.get_codec(name).decode(b"not an image at all")
        if name not in ("jpeg", "jpeg422", "jpeg444"):
            with pytest.raises(tc.CodecError, match=f"{name} cannot decode"):
                tc.get_codec(name).decode(jpeg)


def test_heic_does_not_decode_avif(astronaut512):
    avif = tc.encode_image(astronaut512[:64, :64], "avif", 50).data
    with pytest.raises(tc.CodecError, match="heic cannot decode the data: not HEIC"):
        tc.get_codec("heic").decode(avif)


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
