"""JPEG on the GPU: torchvision's batched nvJPEG encoder and decoder.

``jpeg-nvjpeg`` hands a whole list of images to ``torchvision.io.encode_jpeg``
/ ``decode_jpeg`` at once, which on CUDA tensors is one batched nvJPEG call.
Without CUDA the same torchvision functions run on CPU tensors through
torchvision's bundled libjpeg, one image after another: correct, but with no
batching gain. ``version()`` says which path produced the bytes.

The two paths are not the same encoder. torchvision's nvJPEG path encodes
with 4:4:4 chroma (no chroma subsampling), its CPU path with libjpeg's
default 4:2:0, so at one quality GPU files are larger and sharper in colour
than CPU files, and GPU bytes differ from CPU bytes. Each path repeats its
own bytes for the same input (the CPU path is tested; the GPU path is tested
where CUDA is present). Datasets must record ``version()``.

torchvision 0.29 marks its JPEG functions deprecated in favour of TorchCodec;
the deprecation warning is silenced here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import BatchedCodec, CodecError, check_rgb_image
from .registry import register

_SOI = b"\xff\xd8"


def _torch():
    import torch

    return torch


@contextlib.contextmanager
def _torchvision_io():
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities of TorchVision"
        )
        import torchvision.io

        yield torchvision.io


@dataclass(frozen=True, kw_only=True)
class NvJpegCodec(BatchedCodec):
    queue: ClassVar[str] = "gpu"  # the worker pool that should run it
    max_batch: int = 64  # images per nvJPEG call

    def available(self) -> bool:
        return importlib.util.find_spec("torchvision") is not None

    def device(self) -> str:
        return "cuda" if _torch().cuda.is_available() else "cpu"

    def chroma(self) -> str:
        return "4:4:4" if self.device() == "cuda" else "4:2:0"

    def version(self) -> str:
        import torchvision

        torch = _torch()
        if self.device() == "cuda":
            path = f"nvJPEG (CUDA {torch.version.cuda})"
        else:
            path = "libjpeg (CPU fallback)"
        return f"torchvision {torchvision.__version__} {path}, {self.chroma()} chroma"

    def bits(self, data: bytes) -> int:
        return 8 * len(data)  # a JPEG file is all payload and its own header

    def encode_batch(self, images: Sequence[np.ndarray], level: int) -> list[bytes]:
        level = self.validate_level(level)
        arrays = [check_rgb_image(image) for image in images]
        torch = _torch()
        device = self.device()
        out: list[bytes] = []
        for start in range(0, len(arrays), max(1, self.max_batch)):
            chunk = arrays[start : start + max(1, self.max_batch)]
            # CHW uint8, contiguous: the layout both encoders read.
            tensors = [torch.from_numpy(a).to(device).permute(2, 0, 1).contiguous() for a in chunk]
            try:
                with _torchvision_io() as tio:
                    encoded = tio.encode_jpeg(tensors, quality=level)
            except RuntimeError as exc:
                raise CodecError(f"{self.name} cannot encode: {exc}") from exc
            out.extend(t.cpu().numpy().tobytes() for t in encoded)
        return out

    def decode_batch(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        torch = _torch()
        device = self.device()
        for data in datas:
            if not bytes(data[:2]) == _SOI:
                raise CodecError(f"{self.name} cannot decode the data: not a JPEG file")
        out: list[np.ndarray] = []
        for start in range(0, len(datas), max(1, self.max_batch)):
            chunk = datas[start : start + max(1, self.max_batch)]
            # decode_jpeg wants the file bytes in CPU tensors, whatever the device.
            tensors = [torch.from_numpy(np.frombuffer(bytes(d), np.uint8).copy()) for d in chunk]
            try:
                with _torchvision_io() as tio:
                    decoded = tio.decode_jpeg(tensors, mode=tio.ImageReadMode.RGB, device=device)
            except RuntimeError as exc:
                raise CodecError(f"{self.name} cannot decode the data: {exc}") from exc
            out.extend(np.ascontiguousarray(t.permute(1, 2, 0).cpu().numpy()) for t in decoded)
        return out


NVJPEG_CODEC = NvJpegCodec(
    name="jpeg-nvjpeg",
    label="JPEG (nvJPEG, batched on GPU)",
    level_name="quality",
    level_min=1,
    level_max=100,
)


def register_all() -> list[NvJpegCodec]:
    """Register ``jpeg-nvjpeg`` if torchvision is installed; returns what was registered."""
    if not NVJPEG_CODEC.available():
        return []
    return [register(NVJPEG_CODEC)]
