"""JPEG XL (libjxl) and JPEG XR (jxrlib) through imagecodecs.

Every encoder option is spelt out, even where it equals the library default,
so that an upgrade that changes a default cannot silently change stimuli.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Codec, CodecError, check_rgb_image

try:
    import imagecodecs
except ImportError:  # optional dependency
    imagecodecs = None


@dataclass(frozen=True, kw_only=True)
class ImagecodecsCodec(Codec):
    family: str  # imagecodecs' name: "JPEGXL", "JPEGXR"

    def available(self) -> bool:
        return imagecodecs is not None and bool(
            getattr(getattr(imagecodecs, self.family, None), "available", False)
        )

    def library(self) -> str:
        return getattr(imagecodecs, f"{self.family.lower()}_version")()

    def version(self) -> str:
        return f"imagecodecs {imagecodecs.__version__} / {self.library()}"

    def _encode(self, image: np.ndarray, level: int) -> bytes:
        raise NotImplementedError

    def _decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def encode(self, image: np.ndarray, level: int) -> bytes:
        image = check_rgb_image(image)
        level = self.validate_level(level)
        try:
            return bytes(self._encode(image, level))
        except Exception as exc:  # imagecodecs raises its own error types
            height, width = image.shape[:2]
            raise CodecError(f"{self.name} cannot encode a {width}x{height} image: {exc}") from exc

    def decode(self, data: bytes) -> np.ndarray:
        check = getattr(imagecodecs, f"{self.family.lower()}_check")
        try:
            looks_right = check(data)
        except Exception:
            looks_right = False
        if looks_right is False:  # None means "cannot tell"
            raise CodecError(f"{self.name} cannot decode the data: not {self.label}")
        try:
            pixels = self._decode(data)
        except Exception as exc:
            raise CodecError(f"{self.name} cannot decode the data: {exc}") from exc
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise CodecError(
                f"{self.name} cannot decode {pixels.dtype} data of shape {pixels.shape}"
            )
        return np.array(pixels)  # own, writable memory


@dataclass(frozen=True, kw_only=True)
class JpegXlCodec(ImagecodecsCodec):
    """Lossy JPEG XL (VarDCT, XYB) at a cjxl-style quality.

    ``level`` is the quality of ``cjxl -q``: libjxl turns it into a butteraugli
    distance (JxlEncoderDistanceFromQuality: 90 -> 1.0, 30 -> 6.4, 1 -> 24)
    and the distance drives the rate, so bpp rises smoothly with quality.
    Quality 100 is distance 0, near-lossless and about 16 bpp on photos.
    ``effort`` is libjxl's default, 7 (about 0.1 s for 512x512 on one core).
    One thread, bare codestream (no container box).
    """

    effort: int = 7

    def version(self) -> str:
        return f"{super().version()} (effort {self.effort})"

    def _encode(self, image: np.ndarray, level: int) -> bytes:
        return imagecodecs.jpegxl_encode(
            image,
            level=level,
            effort=self.effort,
            lossless=False,
            decodingspeed=0,
            usecontainer=False,
            numthreads=1,
        )

    def _decode(self, data: bytes) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data, numthreads=1)


@dataclass(frozen=True, kw_only=True)
class JpegXrCodec(ImagecodecsCodec):
    """JPEG XR at ``level``/100 on jxrlib's quality scale; 100 is lossless.

    jxrlib's lowest quality still spends about 0.4 bpp on a 512x512 photo,
    so low targets are out of its reach. Below quality 50 imagecodecs picks
    4:2:0 chroma with two levels of overlap filtering, for which jxrlib needs
    an image at least two macroblocks (17 pixels) wide: narrower images are
    refused there, the one size limit among these codecs.
    """

    min_width_subsampled: int = 17
    first_full_chroma_level: int = 50

    def encode(self, image: np.ndarray, level: int) -> bytes:
        image = check_rgb_image(image)
        level = self.validate_level(level)
        width = image.shape[1]
        if width < self.min_width_subsampled and level < self.first_full_chroma_level:
            raise CodecError(
                f"{self.name} cannot encode a {width}x{image.shape[0]} image at {self.level_name} "
                f"{level}: below {self.level_name} {self.first_full_chroma_level} jxrlib needs "
                f"an image at least {self.min_width_subsampled} pixels wide"
            )
        return super().encode(image, level)

    def _encode(self, image: np.ndarray, level: int) -> bytes:
        return imagecodecs.jpegxr_encode(image, level=level / 100, photometric="RGB")

    def _decode(self, data: bytes) -> np.ndarray:
        return imagecodecs.jpegxr_decode(data)


IMAGECODECS_CODECS: tuple[Codec, ...] = (
    JpegXlCodec(
        name="jpegxl",
        label="JPEG XL",
        level_name="quality",
        level_min=1,
        level_max=100,
        family="JPEGXL",
    ),
    JpegXrCodec(
        name="jpegxr",
        label="JPEG XR",
        level_name="quality",
        level_min=1,
        level_max=100,
        family="JPEGXR",
    ),
)
