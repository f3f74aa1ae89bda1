"""HEIC (HEVC intra in HEIF) through pillow-heif: libheif with the x265 encoder.

Our stand-in for BPG, which is HEVC intra too. Every encoder option is
spelt out, even where it equals the library default, so that an upgrade that
changes a default cannot silently change stimuli.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from .base import Codec, CodecError, check_rgb_image

try:
    import pillow_heif
except ImportError:  # optional dependency
    pillow_heif = None

_HEIC_MIMETYPES = {"image/heic", "image/heif"}


def _version_in_parentheses(text: str) -> str:
    """ "x265 HEVC encoder (4.3+1-e9b8812)" -> "4.3+1-e9b8812"."""
    found = re.search(r"\(([^()]+)\)\s*$", text)
    return found.group(1) if found else text


@dataclass(frozen=True, kw_only=True)
class HeicCodec(Codec):
    """HEVC intra at ``quality`` (libheif's 0..100 scale, mapped to an x265 CRF).

    The x265 thread pool is pinned to one thread so the bytes cannot depend
    on the host's core count; run several encodes side by side instead.
    Colour is the sRGB/BT.601 full-range YCbCr pillow-heif writes by default,
    with 4:2:0 chroma, as BPG's default.
    """

    preset: str = "slow"
    tune: str = "ssim"

    def available(self) -> bool:
        if pillow_heif is None:
            return False
        try:
            info = pillow_heif.libheif_info()
        except Exception:
            return False
        decoders = " ".join(info.get("decoders", {}).values())
        return "x265" in info.get("encoders", {}) and "HEVC" in decoders

    def version(self) -> str:
        info = pillow_heif.libheif_info()
        x265 = _version_in_parentheses(info["encoders"]["x265"])
        return (
            f"pillow-heif {pillow_heif.__version__} / libheif {info['libheif']} / x265 {x265}"
            f" ({self.preset}, 4:2:0)"
        )

    def encode_options(self, level: int) -> dict:
        return {
            "quality": level,
            # A fresh dict each call: pillow-heif writes into it.
            "enc_params": {
                "chroma": "420",
                "preset": self.preset,
                "tune": self.tune,
                "tu-intra-depth": "2",
                "x265:pools": "1",
                "x265:frame-threads": "1",
            },
            "save_nclx_profile": True,
            "color_primaries": 1,  # BT.709 / sRGB
            "transfer_characteristics": 13,  # sRGB
            "matrix_coefficients": 6,  # BT.601
            "full_range_flag": 1,
            "tile_size": 0,  # one coded image, never a grid of tiles
        }

    def encode(self, image: np.ndarray, level: int) -> bytes:
        image = check_rgb_image(image)
        level = self.validate_level(level)
        height, width = image.shape[:2]
        buffer = io.BytesIO()
        try:
            pillow_heif.encode(
                "RGB", (width, height), image.tobytes(), buffer, **self.encode_options(level)
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CodecError(f"{self.name} cannot encode a {width}x{height} image: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        try:
            mimetype = pillow_heif.get_file_mimetype(data)
        except Exception:
            mimetype = ""
        if mimetype not in _HEIC_MIMETYPES:
            raise CodecError(
                f"{self.name} cannot decode the data: not HEIC ({mimetype or 'unknown'})"
            )
        try:
            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            mode = heif.mode
            pixels = np.array(heif)
        except (OSError, ValueError, RuntimeError, EOFError, SyntaxError) as exc:
            raise CodecError(f"{self.name} cannot decode the data: {exc}") from exc
        if mode != "RGB" or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise CodecError(f"{self.name} cannot decode {mode} data {pixels.shape}")
        return pixels


HEIF_CODECS: tuple[Codec, ...] = (
    HeicCodec(
        name="heic",
        label="HEIC (HEVC intra)",
        level_name="quality",
        level_min=1,
        level_max=100,
    ),
)
