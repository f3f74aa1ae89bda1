"""JPEG, JPEG 2000 and WebP through Pillow.

Every encoder option is spelt out, even where it equals Pillow's default, so
that a Pillow upgrade that changes a default cannot silently change stimuli.
"""

from __future__ import annotations

import io
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from .base import Codec, CodecError, check_rgb_image


@dataclass(frozen=True, kw_only=True)
class PillowCodec(Codec):
    pillow_format: str
    feature: str  # key for PIL.features, e.g. "jpg"

    def available(self) -> bool:
        return bool(features.check(self.feature))

    def library(self) -> str:
        """Name and version of the C library Pillow uses for this format."""
        return f"{self.feature} {features.version(self.feature)}"

    def version(self) -> str:
        return f"Pillow {PIL.__version__} / {self.library()}"

    @abstractmethod
    def save_options(self, level: int) -> dict[str, Any]:
        """Keyword arguments for ``Image.save`` at ``level``."""

    def encode(self, image: np.ndarray, level: int) -> bytes:
        image = check_rgb_image(image)
        options = self.save_options(self.validate_level(level))
        buffer = io.BytesIO()
        try:
            Image.fromarray(image).save(buffer, self.pillow_format, **options)
        except (OSError, ValueError) as exc:
            height, width = image.shape[:2]
            raise CodecError(f"{self.name} cannot encode a {width}x{height} image: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data)) as img:
                found = img.format
                img.load()
                rgb = np.array(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise CodecError(f"{self.name} cannot decode the data: {exc}") from exc
        if found != self.pillow_format:
            raise CodecError(f"{self.name} cannot decode {found} data")
        return rgb


@dataclass(frozen=True, kw_only=True)
class JpegCodec(PillowCodec):
    subsampling: str  # "4:2:0", "4:2:2" or "4:4:4"

    def library(self) -> str:
        # features.version("jpg") reports the libjpeg API level (e.g. "6.2"),
        # not the library that actually produced the bytes.
        for feature, name in (("mozjpeg", "mozjpeg"), ("libjpeg_turbo", "libjpeg-turbo")):
            if features.check_feature(feature):
                return f"{name} {features.version_feature(feature)}"
        return f"libjpeg {features.version('jpg')}"

    def save_options(self, level: int) -> dict[str, Any]:
        return {
            "quality": level,
            "subsampling": self.subsampling,
            "optimize": False,
            "progressive": False,
        }


@dataclass(frozen=True, kw_only=True)
class Jpeg2000Codec(PillowCodec):
    def library(self) -> str:
        return f"OpenJPEG {features.version('jpg_2000')}"

    def save_options(self, level: int) -> dict[str, Any]:
        # In "rates" mode a layer value of N asks OpenJPEG for N:1 compression
        # of the raw 24-bit image, so bpp is roughly 24 / level.
        return {
            "quality_mode": "rates",
            "quality_layers": [level],
            "irreversible": True,  # 9/7 wavelet, the lossy JPEG 2000 path
            "no_jp2": True,  # bare codestream: no container bytes inflating bpp
            "progression": "LRCP",
        }


@dataclass(frozen=True, kw_only=True)
class WebPCodec(PillowCodec):
    def library(self) -> str:
        return f"libwebp {features.version('webp')}"

    def save_options(self, level: int) -> dict[str, Any]:
        return {
            "quality": level,
            "lossless": False,
            "method": 4,
            "exact": False,
        }


def _jpeg(name: str, label: str, subsampling: str) -> JpegCodec:
    return JpegCodec(
        name=name,
        label=label,
        level_name="quality",
        level_min=1,
        level_max=100,
        pillow_format="JPEG",
        feature="jpg",
        subsampling=subsampling,
    )


PILLOW_CODECS: tuple[PillowCodec, ...] = (
    _jpeg("jpeg", "JPEG", "4:2:0"),
    _jpeg("jpeg422", "JPEG 4:2:2", "4:2:2"),
    _jpeg("jpeg444", "JPEG 4:4:4", "4:4:4"),
    Jpeg2000Codec(
        name="jpeg2000",
        label="JPEG 2000",
        level_name="compression ratio",
        level_min=2,
        level_max=400,
        higher_is_better=False,
        pillow_format="JPEG2000",
        feature="jpg_2000",
    ),
    WebPCodec(
        name="webp",
        label="WebP",
        level_name="quality",
        level_min=0,
        level_max=100,
        pillow_format="WEBP",
        feature="webp",
    ),
)
