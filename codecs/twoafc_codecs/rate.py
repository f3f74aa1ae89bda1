"""Encoding an image at a target bitrate by searching the codec's quality knob.

Studies compare codecs at equal bitrates, but each codec only offers its own
knob. ``encode_at_bpp`` bisects that knob (an integer) for one whole image:
it stops at the first level whose bitrate is within ``tolerance`` of the
target, and otherwise returns the level whose bitrate came nearest, which is
the codec's nearest achievable rate for this image (a small image may not get
anywhere near a low target: its headers alone cost more).

The search assumes bitrate rises monotonically with quality but tolerates
small bumps: every encode is remembered for the duration of the call, the
best one wins, and the neighbours of the best are tried before giving up.
Nothing is cached between calls.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .base import Codec, CodecError, check_rgb_image
from .registry import Encoded, make_encoded, resolve_codec

# An uncompressed 8-bit RGB image costs 24 bits per pixel; no sensible
# lossy-coding target is higher.
MAX_TARGET_BPP = 24.0


@dataclass(frozen=True, eq=False)
class RateTargeted:
    """The outcome of ``encode_at_bpp``.

    ``encoded`` is the chosen encode (its ``level`` and ``bpp`` equal
    ``level`` and ``achieved_bpp``); ``steps`` counts the encodes the search
    ran. ``within_tolerance`` is False when no level reached the target band:
    ``achieved_bpp`` is then the nearest rate the codec could make.
    """

    encoded: Encoded
    target_bpp: float
    achieved_bpp: float
    level: int
    within_tolerance: bool
    steps: int

    @property
    def relative_error(self) -> float:
        return (self.achieved_bpp - self.target_bpp) / self.target_bpp


def validate_target_bpp(codec: str | Codec, target: object) -> float:
    """``target`` as a float, or CodecError unless 0 < target <= MAX_TARGET_BPP."""
    codec = resolve_codec(codec)
    if (
        isinstance(target, bool)
        or not isinstance(target, numbers.Real)
        or not math.isfinite(target)
        or not 0 < target <= MAX_TARGET_BPP
    ):
        raise CodecError(
            f"{codec.name} target bitrate must be a number of bits per pixel above 0 "
            f"and at most {MAX_TARGET_BPP:g}, got {target!r}"
        )
    return float(target)


def encode_at_bpp(
    image: np.ndarray,
    codec: str | Codec,
    target_bpp: float,
    *,
    tolerance: float = 0.05,
    max_steps: int | None = None,
) -> RateTargeted:
    """Encode the whole ``image`` at the level whose bitrate is nearest ``target_bpp``.

    A level is good enough when its bpp is within ``tolerance`` (relative) of
    the target. ``max_steps`` caps the number of encodes (None: no cap; a
    bisection over 100 levels needs at most 7, over JPEG 2000's 399 at most 9).
    """
    codec = resolve_codec(codec)
    target = validate_target_bpp(codec, target_bpp)
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise CodecError(f"tolerance must be a number, got {tolerance!r}")
    if not 0 <= tolerance < 1:
        raise CodecError(f"tolerance must be at least 0 and below 1, got {tolerance!r}")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1
    ):
        raise CodecError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    image = check_rgb_image(image)
    height, width = image.shape[:2]
    pixels = height * width

    # Rank 0 is the lowest-quality (smallest) level, whichever way the knob points.
    count = codec.level_max - codec.level_min + 1

    def level_at(rank: int) -> int:
        return codec.level_min + rank if codec.higher_is_better else codec.level_max - rank

    tried: dict[int, tuple[bytes, float]] = {}  # rank -> (data, bpp), this call only

    def measure(rank: int) -> float:
        data = codec.encode(image, level_at(rank))
        bpp = codec.bits(data) / pixels
        tried[rank] = (data, bpp)
        return bpp

    def error(rank: int) -> float:
        return abs(tried[rank][1] - target)

    def good(rank: int) -> bool:
        return error(rank) <= tolerance * target

    def budget_left() -> bool:
        return max_steps is None or len(tried) < max_steps

    def best() -> int:
        return min(tried, key=lambda rank: (error(rank), rank))

    low, high = 0, count - 1
    while low <= high and budget_left():
        middle = (low + high) // 2
        bpp = measure(middle)
        if good(middle):
            break
        if bpp < target:
            low = middle + 1
        else:
            high = middle - 1

    # On a monotonic curve both neighbours of the crossing are tried by now;
    # where a bump misled the bisection, walk from the best towards the target.
    chosen = best()
    while not good(chosen) and budget_left():
        step = 1 if tried[chosen][1] < target else -1
        neighbour = chosen + step
        if not 0 <= neighbour < count or neighbour in tried:
            break
        measure(neighbour)
        if best() == chosen:
            break
        chosen = best()

    data, achieved = tried[chosen]
    level = level_at(chosen)
    encoded = make_encoded(codec, level, image, data, codec.decode(data))
    return RateTargeted(
        encoded=encoded,
        target_bpp=target,
        achieved_bpp=achieved,
        level=level,
        within_tolerance=good(chosen),
        steps=len(tried),
    )
