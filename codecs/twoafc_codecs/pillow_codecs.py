"""JPEG, JPEG 2000, WebP and AVIF through Pillow.

Every encoder option is spelt out, even where it equals Pillow's default, so
that a Pillow upgrade that changes a default cannot silently change stimuli.

The JPEG codecs take a verified shortcut through imagecodecs when it makes
byte-identical files (see ``jpeg_turbo``).
"""

from __future__ import annotations

import io
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from . import jpeg_turbo
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
    """Baseline JPEG (standard tables, no Huffman optimisation, not progressive).

    With ``fast_path`` (the default) the bytes come from libjpeg-turbo through
    imagecodecs whenever a probe has shown that it makes exactly Pillow's
    bytes; ``version()`` then names imagecodecs and the Pillow build it matches.
    """

    subsampling: str  # "4:2:0", "4:2:2" or "4:4:4"
    fast_path: bool = True

    def uses_fast_path(self) -> bool:
        return self.fast_path and jpeg_turbo.turbo_matches_pillow()

    def library(self) -> str:
        # features.version("jpg") reports the libjpeg API level (e.g. "6.2"),
        # not the library that actually produced the bytes.
        for feature, name in (("mozjpeg", "mozjpeg"), ("libjpeg_turbo", "libjpeg-turbo")):
            if features.check_feature(feature):
                return f"{name} {features.version_feature(feature)}"
        return f"libjpeg {features.version('jpg')}"

    def version(self) -> str:
        pillow = super().version()
        if self.uses_fast_path():
            return (
                f"imagecodecs {jpeg_turbo.imagecodecs.__version__} / {jpeg_turbo.library()} "
                f"(same bytes as {pillow})"
            )
        return pillow

    def save_options(self, level: int) -> dict[str, Any]:
        return {
            "quality": level,
            "subsampling": self.subsampling,
            "optimize": False,
            "progressive": False,
        }

    def encode(self, image: np.ndarray, level: int) -> bytes:
        if not self.uses_fast_path():
            return super().encode(image, level)
        image = check_rgb_image(image)
        level = self.validate_level(level)
        try:
            return jpeg_turbo.turbo_encode(image, level, self.subsampling)
        except Exception as exc:
            height, width = image.shape[:2]
            raise CodecError(f"{self.name} cannot encode a {width}x{height} image: {exc}") from exc

    def decode(self, data: bytes) -> np.ndarray:
        if self.uses_fast_path():
            try:
                rgb = jpeg_turbo.turbo_decode(data)
            except Exception:
                rgb = None  # not a JPEG, or one imagecodecs cannot read: Pillow gives the verdict
            # Grayscale or CMYK files (never made by encode) go through Pillow's conversion.
            if rgb is not None and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8:
                return rgb
        return super().decode(data)


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


@dataclass(frozen=True, kw_only=True)
class Jpeg2000DbCodec(Jpeg2000Codec):
    """JPEG 2000 whose knob is the PSNR OpenJPEG aims for, in dB.

    OpenJPEG truncates the codestream where its own PSNR estimate reaches the
    target; measured against the source the result lands within about 0.5 dB
    up to 45 dB. Above about 50 dB the 9/7 wavelet saturates (near 55 dB on
    photos) and higher targets only add bytes.
    """

    def save_options(self, level: int) -> dict[str, Any]:
        return {
            "quality_mode": "dB",
            "quality_layers": [level],
            "irreversible": True,
            "no_jp2": True,
            "progression": "LRCP",
        }


@dataclass(frozen=True, kw_only=True)
class AvifCodec(PillowCodec):
    """AV1 intra in AVIF through Pillow's native plugin (libavif with libaom).

    ``speed`` is pinned: libavif's own default (-1, used when a caller passes
    nothing to libavif directly) is the slowest effort and took 6.6 s for a
    512x512 photo, against 0.2 s at speed 6 for about 1% more bytes. One
    encoder thread: libaom's output changes with its thread count, so letting
    it follow the machine's core count would make the bytes depend on the
    host. ``codec="aom"`` because "auto" would pick whichever AV1 encoder the
    build has (rav1e, SVT) and change the bytes with it.
    """

    speed: int = 6
    encoder: str = "aom"

    def available(self) -> bool:
        if not super().available():
            return False
        from PIL import AvifImagePlugin

        return bool(AvifImagePlugin._avif.encoder_codec_available(self.encoder))

    def library(self) -> str:
        from PIL import AvifImagePlugin

        encoder = AvifImagePlugin.get_codec_version(self.encoder) or "unknown version"
        return f"libavif {features.version('avif')} ({self.encoder} {encoder}, speed {self.speed})"

    def save_options(self, level: int) -> dict[str, Any]:
        return {
            "quality": level,
            "speed": self.speed,
            "subsampling": "4:2:0",
            "max_threads": 1,
            "codec": self.encoder,
            "range": "full",
            "tile_rows": 0,
            "tile_cols": 0,
            "autotiling": False,
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
    Jpeg2000DbCodec(
        name="jpeg2000-db",
        label="JPEG 2000 (PSNR target)",
        level_name="PSNR target in dB",
        level_min=10,
        level_max=60,
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
    AvifCodec(
        name="avif",
        label="AVIF",
        level_name="quality",
        level_min=0,
        level_max=100,
        pillow_format="AVIF",
        feature="avif",
    ),
)
