"""A faster route to the same JPEG bytes: libjpeg-turbo through imagecodecs.

Pillow and imagecodecs both wrap libjpeg-turbo and, for baseline
(non-progressive, non-optimised) JPEG with the standard quality scaling, the
two produce byte-identical files; imagecodecs skips Pillow's Image object and
its decoder is about three times faster. Identity is not taken on trust: the
first call runs a probe that encodes a small synthetic image at several
qualities and all three subsamplings through both libraries and compares the
bytes and the decoded pixels. If anything differs (a future libjpeg-turbo
changes its tables, imagecodecs is missing or built against another libjpeg),
the JPEG codecs stay on Pillow.

Measured on one core, 512x512 astronaut, quality 75, 4:2:0 (imagecodecs
2026.3.6 / libjpeg-turbo 3.1.3 vs Pillow 13.0.0 / libjpeg-turbo 3.2.0):
encode 0.51 ms vs 0.69 ms, decode 0.69 ms vs 2.1 ms.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

try:
    import imagecodecs
except ImportError:  # optional dependency
    imagecodecs = None

# Pillow's names for the chroma subsampling modes, and imagecodecs' names.
SUBSAMPLING = {"4:2:0": "420", "4:2:2": "422", "4:4:4": "444"}
_PROBE_QUALITIES = (1, 10, 37, 50, 75, 90, 95, 100)


def pillow_encode(image: np.ndarray, quality: int, subsampling: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer,
        "JPEG",
        quality=quality,
        subsampling=subsampling,
        optimize=False,
        progressive=False,
    )
    return buffer.getvalue()


def turbo_encode(image: np.ndarray, quality: int, subsampling: str) -> bytes:
    return bytes(
        imagecodecs.jpeg8_encode(
            image,
            level=quality,
            subsampling=SUBSAMPLING[subsampling],
            optimize=False,
            lossless=False,
        )
    )


def turbo_decode(data: bytes) -> np.ndarray:
    return imagecodecs.jpeg8_decode(data)


def library() -> str:
    """E.g. "libjpeg-turbo 3.1.3" (imagecodecs says "libjpeg_turbo 3.1.3/8.0")."""
    name, _, version = imagecodecs.jpeg8_version().partition(" ")
    return f"{name.replace('_', '-')} {version.split('/')[0]}".strip()


def _probe_image() -> np.ndarray:
    # Odd size (partial MCUs in both directions), noise and smooth ramps,
    # saturated and dark corners: every part of the coder gets exercised.
    rng = np.random.default_rng(20240607)
    height, width = 45, 67
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * 255 / width, y * 255 / height, (x + y) * 255 / (width + height)], 2)
    noise = rng.normal(0, 40, (height, width, 3))
    image = np.clip(ramps + noise, 0, 255).astype(np.uint8)
    image[:8, :8] = 255
    image[-8:, -8:] = 0
    return image


@functools.cache
def turbo_matches_pillow() -> bool:
    """Whether imagecodecs gives Pillow's exact JPEG bytes and pixels (probed once a process)."""
    if imagecodecs is None or not getattr(imagecodecs.JPEG8, "available", False):
        return False
    image = _probe_image()
    try:
        for subsampling in SUBSAMPLING:
            for quality in _PROBE_QUALITIES:
                reference = pillow_encode(image, quality, subsampling)
                if turbo_encode(image, quality, subsampling) != reference:
                    return False
                with Image.open(io.BytesIO(reference)) as img:
                    pixels = np.asarray(img.convert("RGB"))
                decoded = turbo_decode(reference)
                if decoded.shape != pixels.shape or not np.array_equal(decoded, pixels):
                    return False
    except Exception:  # any failure in the optional library means: use Pillow
        return False
    return True
