"""The batch interface, the worker queue and bit counting that GPU and learned codecs build on."""

import dataclasses

import numpy as np
import pytest
from skimage import data

import twoafc_codecs as tc


@pytest.fixture(scope="module")
def photos(astronaut512):
    # Different sizes, one of them odd, one a strided view.
    return [astronaut512, data.chelsea(), data.coffee()[1:300:, 5:406]]


@pytest.mark.parametrize("name", ["jpeg", "webp", "jpeg2000"])
def test_encode_images_equals_encode_image_one_by_one(name, photos):
    batch = tc.encode_images(photos, name, 40 if name != "jpeg2000" else 30)
    assert len(batch) == len(photos)
    for image, result in zip(photos, batch, strict=True):
        single = tc.encode_image(image, name, result.level)
        assert isinstance(result, tc.Encoded)
        assert result.data == single.data
        np.testing.assert_array_equal(result.decoded, single.decoded)
        assert (result.codec, result.level, result.bpp, result.version) == (
            single.codec,
            single.level,
            single.bpp,
            single.version,
        )
        assert (result.height, result.width) == image.shape[:2]


def test_default_batch_methods_loop_over_encode_and_decode(photos):
    codec = tc.get_codec("webp")
    data_list = codec.encode_batch(photos, 50)
    assert data_list == [codec.encode(image, 50) for image in photos]
    decoded = codec.decode_batch(data_list)
    for image, pixels in zip(photos, decoded, strict=True):
        assert pixels.shape == image.shape and pixels.dtype == np.uint8


def test_encode_images_edge_cases(astronaut512):
    assert tc.encode_images([], "jpeg", 50) == []
    with pytest.raises(tc.CodecError, match="list of"):
        tc.encode_images(astronaut512, "jpeg", 50)  # one array, not a list of them
    with pytest.raises(tc.CodecError, match="from 1 to 100"):
        tc.encode_images([astronaut512], "jpeg", 0)
    with pytest.raises(tc.CodecError, match="uint8"):
        tc.encode_images([astronaut512, astronaut512.astype(np.float32)], "jpeg", 50)
    with pytest.raises(tc.UnknownCodec):
        tc.encode_images([astronaut512], "nope", 50)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FakeGpuCodec(tc.Codec):
    """Stores raw pixels behind a 12-byte header; counts only the pixel bytes as bits."""

    queue = "gpu"
    batches: list = dataclasses.field(default_factory=list)

    def version(self):
        return "fake-gpu 1"

    def encode(self, image, level):
        height, width = image.shape[:2]
        return height.to_bytes(4, "big") + width.to_bytes(4, "big") + bytes(4) + image.tobytes()

    def decode(self, data):
        height, width = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        return np.frombuffer(data[12:], np.uint8).reshape(height, width, 3).copy()

    def encode_batch(self, images, level):
        self.batches.append(("encode", len(images)))
        return [self.encode(image, level) for image in images]

    def decode_batch(self, data):
        self.batches.append(("decode", len(data)))
        return [self.decode(item) for item in data]

    def bits(self, data):
        return 8 * (len(data) - 12)


def fake(**kwargs) -> FakeGpuCodec:
    return FakeGpuCodec(
        name="fake-gpu", label="Fake", level_name="level", level_min=0, level_max=3, **kwargs
    )


def test_encode_images_goes_through_the_batch_methods(photos):
    codec = fake()
    results = tc.encode_images(photos, codec, 1)
    assert codec.batches == [("encode", 3), ("decode", 3)]
    for image, result in zip(photos, results, strict=True):
        np.testing.assert_array_equal(result.decoded, image)
        assert result.bpp == 24.0  # header bytes not counted


def test_bits_override_sets_the_bitrate_everywhere(astronaut512):
    codec = fake()
    assert tc.encode_image(astronaut512, codec, 0).bpp == 24.0
    assert tc.encode_at_bpp(astronaut512, codec, 24.0).achieved_bpp == 24.0
    assert tc.get_codec("jpeg").bits(b"12345") == 40


def test_queue_is_a_class_attribute_not_a_field():
    assert tc.Codec.queue == "cpu"
    from twoafc_codecs.heif_codecs import HEIF_CODECS
    from twoafc_codecs.imagecodecs_codecs import IMAGECODECS_CODECS
    from twoafc_codecs.pillow_codecs import PILLOW_CODECS

    assert all(c.queue == "cpu" for c in PILLOW_CODECS + HEIF_CODECS + IMAGECODECS_CODECS)
    assert fake().queue == "gpu"
    assert "queue" not in {field.name for field in dataclasses.fields(fake())}


def test_batch_methods_must_keep_the_count(astronaut512):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Dropping(FakeGpuCodec):
        def encode_batch(self, images, level):
            return super().encode_batch(images, level)[:-1]

    codec = Dropping(name="drop", label="x", level_name="l", level_min=0, level_max=0)
    with pytest.raises(tc.CodecError, match="returned 1 encodings for 2 images"):
        tc.encode_images([astronaut512, astronaut512], codec, 0)


def test_decoded_shape_is_checked(astronaut512):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Cropping(FakeGpuCodec):
        def decode(self, data):
            return super().decode(data)[1:]

    codec = Cropping(name="crop", label="x", level_name="l", level_min=0, level_max=0)
    with pytest.raises(tc.CodecError, match="differs from input"):
        tc.encode_image(astronaut512, codec, 0)
    with pytest.raises(tc.CodecError, match="differs from input"):
        tc.encode_images([astronaut512], codec, 0)
