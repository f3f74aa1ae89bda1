"""The codec registry and the one call studies use to make a stimulus."""

from __future__ import annotations

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

    ``bpp`` counts every byte of the encoded file (headers included) over the
    pixels of the whole image.
    """

    codec: str
    level: int
    data: bytes
    decoded: np.ndarray
    bpp: float
    version: str
    width: int
    height: int


def encode_image(image: np.ndarray, codec: str | Codec, level: int) -> Encoded:
    """Encode and decode the whole ``image``, measuring its bitrate.

    Always pass the whole image and cut patches from ``decoded`` afterwards:
    a lone patch carries the full header overhead and has no context for the
    encoder, so its bitrate and artefacts are not those of the real image.
    """
    if not isinstance(codec, Codec):
        codec = get_codec(codec)
    level = codec.validate_level(level)
    image = check_rgb_image(image)
    data = codec.encode(image, level)
    decoded = codec.decode(data)
    if decoded.shape != image.shape:
        raise CodecError(
            f"{codec.name} decoded shape {decoded.shape} differs from input {image.shape}"
        )
    height, width = image.shape[:2]
    return Encoded(
        codec=codec.name,
        level=level,
        data=data,
        decoded=decoded,
        bpp=8 * len(data) / (height * width),
        version=codec.version(),
        width=width,
        height=height,
    )
