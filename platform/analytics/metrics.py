"""Baseline metrics as distances (larger = more different), so ``score_2afc`` applies as is.

All take uint8 RGB arrays ``ref``, ``dist`` of shape N x H x W x 3 (or one H x W x 3) and
return a float64 array of shape (N,).

This module does not import Django.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from analytics.dpl import BackboneUnavailable, to_tensor

__all__ = ["psnr_distance", "ssim_distance", "lpips_distance", "METRICS", "lpips_trunk_checkpoint"]


def _pairs(ref, dist) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(ref), np.asarray(dist)
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.shape != b.shape:
        raise ValueError(f"ref and dist must have the same shape: {a.shape} vs {b.shape}")
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 images, got {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError("expected uint8 images")
    return a, b


def psnr_distance(ref, dist) -> np.ndarray:
    """-PSNR in dB per image (data range 255). Identical images give -inf (the smallest
    possible distance), which orders correctly in ``score_2afc``."""
    a, b = _pairs(ref, dist)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(255.0**2 / mse)
    return -psnr


def ssim_distance(ref, dist) -> np.ndarray:
    """1 - SSIM per image, via ``skimage.metrics.structural_similarity`` (channel_axis=-1,
    data_range=255, its default 7x7 window)."""
    a, b = _pairs(ref, dist)
    return np.array(
        [
            1.0 - structural_similarity(x, y, channel_axis=-1, data_range=255)
            for x, y in zip(a, b, strict=True)
        ],
        dtype=np.float64,
    )


# torchvision's cache file for each lpips trunk (what lpips would otherwise download).
_TRUNK_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_LPIPS_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def lpips_trunk_checkpoint(net: str = "alex") -> Path:
    """$TORCH_HOME/hub/checkpoints/<file> for the lpips trunk ``net``."""
    if net not in _TRUNK_FILES:
        raise ValueError(f"unknown lpips net {net!r}; choose one of {tuple(_TRUNK_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / _TRUNK_FILES[net]


def _lpips_model(net: str) -> torch.nn.Module:
    ckpt = lpips_trunk_checkpoint(net)
    # Check first: lpips would otherwise try to download ImageNet weights (fails offline).
    if not ckpt.is_file():
        raise BackboneUnavailable(
            f"lpips-{net} needs torchvision's ImageNet weights at {ckpt}; nothing is downloaded. "
            "Copy the file there (or set TORCH_HOME)."
        )
    key = (net, str(ckpt))
    if key not in _LPIPS_CACHE:
        import warnings

        import lpips

        with warnings.catch_warnings():
            # lpips 0.1.4 calls torchvision with the deprecated ``pretrained=`` argument.
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, version="0.1", verbose=False)
        _LPIPS_CACHE[key] = model.eval()
    return _LPIPS_CACHE[key]


def lpips_distance(ref, dist, net: str = "alex", batch_size: int = 64) -> np.ndarray:
    """LPIPS v0.1 distance per image through the ``lpips`` package (its published heads on
    the ImageNet trunk). Raises ``BackboneUnavailable`` if the trunk file is not local."""
    a, b = _pairs(ref, dist)
    model = _lpips_model(net)
    out = np.empty(len(a), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, len(a), batch_size):
            x, y = to_tensor(a[s : s + batch_size]), to_tensor(b[s : s + batch_size])
            out[s : s + len(x)] = model(x, y).reshape(-1).double().numpy()
    return out


METRICS: dict[str, Callable[..., np.ndarray]] = {
    "psnr": psnr_distance,
    "ssim": ssim_distance,
    "lpips-alex": lpips_distance,
}
