"""Loading source images safely, and cutting them into crops and patches."""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .base import CodecError

Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MIN_SIDE = 16

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_WHITE = (255, 255, 255, 255)


def load_rgb(
    source: Source,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> np.ndarray:
    """Read an untrusted image file into an H×W×3 uint8 RGB array.

    The pixel count is checked from the header before any pixel is decoded,
    so a small file declaring huge dimensions costs nothing. Transparency is
    flattened onto white, high bit depths are scaled down to 8 bits, and the
    EXIF orientation is applied so the array looks like the photo does in a
    viewer. Raises CodecError for anything unusable.
    """
    if isinstance(source, str | os.PathLike):
        opener: str | os.PathLike | io.BytesIO = source
    elif isinstance(source, bytes | bytearray | memoryview):
        opener = io.BytesIO(bytes(source))
    else:
        # Read once so the data can be opened twice (verify() spends an Image).
        data = source.read()
        if not isinstance(data, bytes):
            raise CodecError("image file must be opened in binary mode")
        opener = io.BytesIO(data)

    with _open(opener, max_pixels, min_side) as img:
        try:
            img.verify()
        except Exception as exc:
            raise CodecError(f"image is corrupt: {exc}") from exc

    with _open(opener, max_pixels, min_side) as img:
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            raise CodecError(f"image has too many pixels: {exc}") from exc
        except Exception as exc:
            raise CodecError(f"image is corrupt or truncated: {exc}") from exc
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:
            pass  # a malformed EXIF block is metadata damage, not pixel damage: keep as stored
        return _to_rgb8(img)


def _open(opener: str | os.PathLike | io.BytesIO, max_pixels: int, min_side: int) -> Image.Image:
    if isinstance(opener, io.BytesIO):
        opener.seek(0)
    try:
        img = Image.open(opener)
    except Image.DecompressionBombError as exc:
        # Pillow's own bomb guard fires inside open() for absurd sizes.
        raise CodecError(f"image has too many pixels (limit {max_pixels:,}): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise CodecError("not an image, or an image format Pillow cannot read") from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise CodecError(f"cannot read image file: {exc}") from exc
    except Exception as exc:  # Pillow plugins raise many types on bad input
        raise CodecError(f"image is corrupt or truncated: {exc}") from exc

    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise CodecError(
            f"image has too many pixels: {width}x{height} = {width * height:,}, "
            f"limit {max_pixels:,}"
        )
    if min(width, height) < min_side:
        img.close()
        raise CodecError(f"image is too small: {width}x{height}, each side must be >= {min_side}")
    return img


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.array(img)
    # Before the alpha test: Pillow's own I;16 -> RGB(A) conversion clips
    # instead of scaling.
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _gray_to_rgb8(np.asarray(img), mode)
    if "A" in mode or "a" in mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
    try:
        return np.array(img.convert("RGB"))
    except ValueError as exc:
        raise CodecError(f"cannot convert image mode {mode} to RGB") from exc


def _gray_to_rgb8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a high-bit-depth grayscale image to 8 bits, keeping its full range."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and low >= 0 and high <= 65535):
        # Mode "I" usually holds 16-bit data (older PNG/TIFF decoders).
        scaled = values / 257.0  # 65535 -> 255 exactly
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        # No known nominal range: stretch what is there.
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def center_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    """The size×size square at the centre of ``image``; ``image`` itself if size is None."""
    if size is None:
        return image
    height, width = image.shape[:2]
    if size < 1 or height < size or width < size:
        raise CodecError(f"cannot crop {size}x{size} from a {width}x{height} image")
    top = (height - size) // 2
    left = (width - size) // 2
    return image[top : top + size, left : left + size].copy()


def patch_positions(
    height: int, width: int, patch_size: int, count: int, seed: int
) -> list[tuple[int, int]]:
    """``count`` distinct (y, x) top-left corners on a patch_size grid, chosen by ``seed``.

    Grid cells never overlap, so no two patches share a pixel.
    """
    if patch_size < 1:
        raise CodecError(f"patch_size must be positive, got {patch_size}")
    if count < 0:
        raise CodecError(f"count must not be negative, got {count}")
    rows, cols = height // patch_size, width // patch_size
    if rows * cols < count:
        raise CodecError(
            f"a {width}x{height} image has {rows * cols} non-overlapping "
            f"{patch_size}x{patch_size} patches, {count} requested"
        )
    rng = np.random.default_rng(seed)
    cells = rng.choice(rows * cols, size=count, replace=False)
    return [(int(c // cols) * patch_size, int(c % cols) * patch_size) for c in cells]


def cut_patch(image: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """The size×size patch whose top-left corner is (y, x)."""
    height, width = image.shape[:2]
    if size < 1 or y < 0 or x < 0 or y + size > height or x + size > width:
        raise CodecError(
            f"patch {size}x{size} at (y={y}, x={x}) does not fit in a {width}x{height} image"
        )
    return image[y : y + size, x : x + size].copy()
