"""The codec registry and the one call studies use to make a stimulus."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .base import Codec, CodecError, UnknownCodec, check_rgb_image

_REGISTRY: dict[str, Codec] = {}


def register(codec: Codec, *, replace: bool = False) -> Codec:
    """Make ``codec`` available under ``codec.name``; returns it."""
    if not isinstance(codec, Codec):
        raise CodecError(f"can only register Codec instances, got {type(codec).__name__}")
    existing = _REGISTRY.get(codec.name)
    if existing is not None and existing is not codec and not replace:
        raise CodecError(f"a codec named {codec.name!r} is already registered")
    _REGISTRY[codec.name] = codec
    return codec


def register_available(codecs: Iterable[Codec]) -> list[str]:
    """Register those of ``codecs`` this process can run; returns their names.

    A build without a format's library would fail on first use; leaving the
    codec out makes available_codecs() tell the truth instead.
    """
    names = []
    for codec in codecs:
        try:
            usable = codec.available()
        except Exception:  # a broken optional library counts as missing
            usable = False
        if usable:
            register(codec)
            names.append(codec.name)
    return names


def get_codec(name: str) -> Codec:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: unhashable name
        raise UnknownCodec(
            f"unknown codec {name!r}; known codecs: {', '.join(available_codecs())}"
        ) from None


def available_codecs() -> list[str]:
    return sorted(_REGISTRY)


def validate_setting(name: str, level: int) -> None:
    """Raise UnknownCodec or CodecError unless (name, level) can be encoded."""
    get_codec(name).validate_level(level)


@dataclass(frozen=True, eq=False)
class Encoded:
    """An image after one trip through a codec.

    ``bpp`` is ``codec.bits(data)`` over the pixels of the whole image: every
    byte of the encoded file, headers included, for all library codecs.
    """

    codec: str
    level: int
    data: bytes
    decoded: np.ndarray
    bpp: float
    version: str
    width: int
    height: int


def resolve_codec(codec: str | Codec) -> Codec:
    """``codec`` itself if it is a Codec, else the registered codec of that name."""
    return codec if isinstance(codec, Codec) else get_codec(codec)


def encode_image(image: np.ndarray, codec: str | Codec, level: int) -> Encoded:
    """Encode and decode the whole ``image``, measuring its bitrate.

    Always pass the whole image and cut patches from ``decoded`` afterwards:
    a lone patch carries the full header overhead and has no context for the
    encoder, so its bitrate and artefacts are not those of the real image.
    """
    codec = resolve_codec(codec)
    level = codec.validate_level(level)
    image = check_rgb_image(image)
    data = codec.encode(image, level)
    return make_encoded(codec, level, image, data, codec.decode(data))


def encode_images(images: Sequence[np.ndarray], codec: str | Codec, level: int) -> list[Encoded]:
    """``encode_image`` for several images at once, through the codec's batch interface.

    CPU codecs loop; GPU and learned codecs encode and decode the whole batch
    in one go. Each result is what ``encode_image`` would give for that image.
    """
    codec = resolve_codec(codec)
    level = codec.validate_level(level)
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
        raise CodecError(
            f"images must be a list of (height, width, 3) arrays, got {type(images).__name__}"
        )
    checked = [check_rgb_image(image) for image in images]
    if not checked:
        return []
    data = list(codec.encode_batch(checked, level))
    if len(data) != len(checked):
        raise CodecError(f"{codec.name} returned {len(data)} encodings for {len(checked)} images")
    decoded = list(codec.decode_batch(data))
    if len(decoded) != len(data):
        raise CodecError(f"{codec.name} returned {len(decoded)} decodings for {len(data)} images")
    return [
        make_encoded(codec, level, image, item, pixels)
        for image, item, pixels in zip(checked, data, decoded, strict=True)
    ]


def make_encoded(
    codec: Codec, level: int, image: np.ndarray, data: bytes, decoded: np.ndarray
) -> Encoded:
    """Package one encode of ``image``, checking the decoded result and measuring its bitrate."""
    if (
        not isinstance(decoded, np.ndarray)
        or decoded.shape != image.shape
        or decoded.dtype != np.uint8
    ):
        shape = getattr(decoded, "shape", None)
        dtype = getattr(decoded, "dtype", type(decoded).__name__)
        raise CodecError(
            f"{codec.name} decoded shape {shape} ({dtype}) differs from input {image.shape} (uint8)"
        )
    height, width = image.shape[:2]
    return Encoded(
        codec=codec.name,
        level=level,
        data=bytes(data),
        decoded=decoded,
        bpp=codec.bits(data) / (height * width),
        version=codec.version_at(level),
        width=width,
        height=height,
    )


def check_determinism(codec: str | Codec, image: np.ndarray, level: int) -> bool:
    """Whether two encodes of ``image`` at ``level`` give identical bytes.

    The second encode gets a fresh copy of the image, so that a codec keeping
    state keyed on the array object cannot fake a repeat.
    """
    codec = resolve_codec(codec)
    level = codec.validate_level(level)
    image = check_rgb_image(image)
    first = codec.encode(image, level)
    second = codec.encode(image.copy(), level)
    return bytes(first) == bytes(second)
