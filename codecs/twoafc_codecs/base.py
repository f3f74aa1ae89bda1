"""The codec interface and the errors every part of the library raises."""

from __future__ import annotations

import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# Codec names end up in database rows, URLs and file names.
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class CodecError(ValueError):
    """Bad input to the codec library: unknown setting, bad level, unusable image."""


class UnknownCodec(CodecError):
    """A codec name that is not registered."""


@dataclass(frozen=True, kw_only=True)
class Codec(ABC):
    """One image codec with a single integer quality knob.

    ``level`` is the knob: quality for JPEG/WebP, compression ratio for
    JPEG 2000. ``higher_is_better`` says which way it points, so that callers
    can order settings from worst to best without knowing the codec.

    ``deterministic`` may be True only where a test shows that repeat encodes
    of one image at one level give identical bytes (see
    ``twoafc_codecs.check_determinism``).

    ``queue`` names the worker pool that should run the codec: "cpu" for
    library codecs, "gpu" for codecs that need an accelerator. It is a class
    attribute, not a field: set it in the subclass body.
    """

    queue: ClassVar[str] = "cpu"

    name: str
    label: str
    level_name: str
    level_min: int
    level_max: int
    higher_is_better: bool = True
    deterministic: bool = True

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.match(self.name):
            raise CodecError(
                f"codec name {self.name!r} must be lower-case letters, digits, '-' or '_'"
            )
        if not self.level_min <= self.level_max:
            raise CodecError(
                f"codec {self.name}: level_min {self.level_min} > level_max {self.level_max}"
            )

    @abstractmethod
    def version(self) -> str:
        """The implementation behind the codec, e.g. "Pillow 12.0.0 / libjpeg-turbo 3.0.4"."""

    @abstractmethod
    def encode(self, image: np.ndarray, level: int) -> bytes:
        """Compress an H×W×3 uint8 RGB image at ``level``."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress bytes made by :meth:`encode` to an H×W×3 uint8 RGB image."""

    def available(self) -> bool:
        """Whether this process can run the codec (library built in, device present)."""
        return True

    def version_at(self, level: int) -> str:
        """The version string of the bytes made at ``level``; the same at every level by default.

        Learned codecs use one checkpoint per level and name it here.
        """
        return self.version()

    def check_ready(self, level: int | None) -> None:
        """Raise CodecError if this machine cannot encode at ``level`` (None: at every level).

        Called when a study is configured, so a missing resource is reported
        then rather than in a worker. Nothing is missing by default.
        """
        return None

    def bits(self, data: bytes) -> int:
        """The bits that count towards the bitrate of ``data``: by default all of them.

        Codecs whose container carries more than the coded image (learned
        codecs storing shapes next to their entropy-coded strings) override
        this to count only what a real bitstream would need.
        """
        return 8 * len(data)

    def encode_batch(self, images: Sequence[np.ndarray], level: int) -> list[bytes]:
        """Encode several images at one ``level``; the default encodes them one by one.

        Codecs that gain from batching (GPU and learned codecs) override this.
        The result must equal ``[self.encode(image, level) for image in images]``
        for a deterministic codec.
        """
        return [self.encode(image, level) for image in images]

    def decode_batch(self, data: Sequence[bytes]) -> list[np.ndarray]:
        """Decode several encoded images; the default decodes them one by one."""
        return [self.decode(item) for item in data]

    def describe_range(self) -> str:
        direction = (
            "higher means better quality" if self.higher_is_better else "higher means lower quality"
        )
        return f"{self.level_min} to {self.level_max} ({direction})"

    def validate_level(self, level: object) -> int:
        # bool is an int subclass, and True as a quality is always a mistake.
        if isinstance(level, bool) or not isinstance(level, numbers.Integral):
            raise CodecError(
                f"{self.name} {self.level_name} must be an integer from "
                f"{self.describe_range()}, got {level!r}"
            )
        if not self.level_min <= level <= self.level_max:
            raise CodecError(
                f"{self.name} {self.level_name} must be from {self.describe_range()}, got {level}"
            )
        return int(level)


@dataclass(frozen=True, kw_only=True)
class BatchedCodec(Codec):
    """A codec whose natural unit is a batch (GPU, learned): one image is a batch of one.

    Subclasses implement ``encode_batch`` and ``decode_batch``.
    """

    @abstractmethod
    def encode_batch(self, images: Sequence[np.ndarray], level: int) -> list[bytes]: ...

    @abstractmethod
    def decode_batch(self, data: Sequence[bytes]) -> list[np.ndarray]: ...

    def encode(self, image: np.ndarray, level: int) -> bytes:
        return self.encode_batch([image], level)[0]

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_batch([data])[0]


def check_rgb_image(image: object) -> np.ndarray:
    """Return ``image`` as a C-contiguous H×W×3 uint8 array, or raise CodecError."""
    if not isinstance(image, np.ndarray):
        raise CodecError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise CodecError(f"image must have shape (height, width, 3), got {image.shape}")
    if image.dtype != np.uint8:
        raise CodecError(f"image must be uint8, got {image.dtype}")
    return np.ascontiguousarray(image)
