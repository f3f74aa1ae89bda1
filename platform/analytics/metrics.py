"""The metric registry: every image-quality metric as a distance (larger = more different).

Every distance takes uint8 RGB arrays ``ref``, ``dist`` of shape N x H x W x 3 (or one
H x W x 3) and returns a float64 array of shape (N,), so ``scoring.score_2afc`` applies to
any of them as is.

``REGISTRY`` maps a name to a ``Metric`` (distance, description, and ``unavailable()``, the
reason it cannot run on this machine, if any). ``METRICS`` is the same registry as plain
callables, name -> distance. ``dpl_metric`` makes the entry for a fitted DPL weights file.

Networks never download anything. The ``lpips`` trunks read torchvision's ImageNet files from
``$TORCH_HOME/hub/checkpoints/`` (``lpips_trunk_checkpoint`` names each); when one is
missing the metric raises ``dpl.BackboneUnavailable`` naming the file, and never falls back
to a random trunk. "stlpips-alex" (Ghildyal & Liu, ECCV 2022) is the trained network that works
offline.

This module does not import Django.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from pytorch_msssim import ms_ssim
from skimage.metrics import structural_similarity

from analytics import dpl
from analytics.dpl import BackboneUnavailable, to_tensor

__all__ = [
    "METRICS",
    "REGISTRY",
    "Metric",
    "MetricUnavailable",
    "dpl_metric",
    "lpips_distance",
    "lpips_trunk_checkpoint",
    "msssim_distance",
    "msssim_window",
    "psnr_distance",
    "ssim_distance",
    "stlpips_distance",
]


class MetricUnavailable(BackboneUnavailable):
    """A metric cannot run on these images (e.g. MS-SSIM on patches of 32 pixels or less).

    A ``BackboneUnavailable``, so every caller that reports a missing trunk as "unavailable"
    reports this the same way."""


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


MSSSIM_WINDOW = 11


def msssim_window(side: int) -> int:
    """The Gaussian window MS-SSIM uses on images whose smaller side is ``side`` pixels.

    ``pytorch_msssim.ms_ssim`` downsamples 4 times (5 scales, the standard weights of Wang
    et al. 2003) and requires ``side > (win_size - 1) * 16``; with its default 11-tap window
    that is 161 pixels. Its documentation's remedy for smaller images is a smaller window, so
    we keep all 5 scales and weights and take the largest odd window up to 11 that fits:
    11 from 161 pixels, 9 from 129, 7 from 97, 5 from 65, and 3 for 33..64 (a 64x64 patch
    gets 3). Images of 32 pixels or less cannot be scored: ``MetricUnavailable``."""
    win = min(MSSSIM_WINDOW, (side - 1) // 16 + 1)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise MetricUnavailable(
            f"ms-ssim needs images larger than 32 pixels per side (5 scales), got {side}"
        )
    return win


def msssim_distance(ref, dist, batch_size: int = 256) -> np.ndarray:
    """1 - MS-SSIM per image through ``pytorch_msssim.ms_ssim`` (data_range=255, 5 scales with
    the standard weights, window sigma 1.5, window size from ``msssim_window``)."""
    a, b = _pairs(ref, dist)
    win = msssim_window(min(a.shape[1:3]))
    out = np.empty(len(a), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, len(a), batch_size):
            x = torch.from_numpy(a[s : s + batch_size]).permute(0, 3, 1, 2).float()
            y = torch.from_numpy(b[s : s + batch_size]).permute(0, 3, 1, 2).float()
            value = ms_ssim(x, y, data_range=255, size_average=False, win_size=win)
            out[s : s + len(x)] = 1.0 - value.double().numpy()
    return out


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------


def _torchvision_weights(net: str):
    import torchvision.models as tv  # deferred: only the torchvision-trunk metrics need it

    weights = {
        "alex": tv.AlexNet_Weights.IMAGENET1K_V1,
        "vgg": tv.VGG16_Weights.IMAGENET1K_V1,
        "squeeze": tv.SqueezeNet1_1_Weights.IMAGENET1K_V1,
    }
    if net not in weights:
        raise ValueError(f"unknown lpips net {net!r}; choose one of {tuple(weights)}")
    return weights[net]


def lpips_trunk_checkpoint(net: str = "alex") -> Path:
    """$TORCH_HOME/hub/checkpoints/<file> for the lpips trunk ``net`` ("alex", "vgg" or
    "squeeze"): the file torchvision would otherwise download for the ImageNet weights that
    ``lpips`` asks for (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
    ``squeezenet1_1-b8a52dc0.pth``)."""
    name = Path(urlparse(_torchvision_weights(net).url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _check_lpips_trunk(net: str) -> Path:
    ckpt = lpips_trunk_checkpoint(net)
    if not ckpt.is_file():
        raise BackboneUnavailable(
            f"lpips-{net} needs torchvision's ImageNet weights at {ckpt}; nothing is downloaded. "
            "Copy the file there (or set TORCH_HOME)."
        )
    return ckpt


@functools.cache
def _lpips_model(net: str, checkpoint: str) -> torch.nn.Module:
    import lpips  # deferred: the lpips package, only for the "lpips-*" metrics

    with warnings.catch_warnings():
        # lpips 0.1.4 calls torchvision with the deprecated ``pretrained=`` argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", verbose=False)
    return model.eval()


def _net_distance(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, batch_size: int):
    out = np.empty(len(a), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, len(a), batch_size):
            x, y = to_tensor(a[s : s + batch_size]), to_tensor(b[s : s + batch_size])
            out[s : s + len(x)] = model(x, y).reshape(-1).double().numpy()
    return out


def lpips_distance(ref, dist, net: str = "alex", batch_size: int = 64) -> np.ndarray:
    """LPIPS v0.1 distance per image through the ``lpips`` package (its published heads on
    the ImageNet trunk ``net``). Raises ``BackboneUnavailable`` naming the trunk file if it
    is not local (checked first: ``lpips`` would otherwise try to download it)."""
    a, b = _pairs(ref, dist)
    ckpt = _check_lpips_trunk(net)
    return _net_distance(_lpips_model(net, str(ckpt)), a, b, batch_size)


@functools.cache
def _dpl_model(backbone: str, weights: str | None) -> dpl.DPL:
    return dpl.load_dpl(backbone, weights=weights)


def stlpips_distance(ref, dist, batch_size: int = 64) -> np.ndarray:
    """The shift-tolerant LPIPS network of ``stlpips-pytorch`` with its own trained heads
    (Ghildyal & Liu, ECCV 2022): works offline; ``BackboneUnavailable`` if the wheel's file is missing."""
    a, b = _pairs(ref, dist)
    return _net_distance(_dpl_model("stlpips-alex", None), a, b, batch_size)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One registry entry. ``check`` raises ``BackboneUnavailable`` when the metric cannot run
    on this machine (it loads nothing heavy)."""

    name: str
    description: str
    distance: Callable[..., np.ndarray]
    check: Callable[[], object] | None = None

    def unavailable(self) -> str | None:
        """Why this metric cannot run here, or None when it can."""
        if self.check is None:
            return None
        try:
            self.check()
        except BackboneUnavailable as error:
            return str(error)
        return None


def dpl_metric(weights: str | Path, backbone: str = "stlpips-alex", name: str = "dpl") -> Metric:
    """A registry entry for fitted DPL weights (an lpips-format .pth, as ``fit_dpl`` writes)
    on ``backbone`` (one of ``dpl.BACKBONES``; "random" only when asked for)."""
    path = Path(weights)

    def check() -> None:
        if not path.is_file():
            raise BackboneUnavailable(f"{name} needs its weights file {path}, which is missing")
        if backbone == "stlpips-alex":
            dpl.stlpips_weights_path()
        elif backbone == "alex":
            _check_lpips_trunk("alex")

    def distance(ref, dist, batch_size: int = 64) -> np.ndarray:
        a, b = _pairs(ref, dist)
        check()
        return _net_distance(_dpl_model(backbone, str(path)), a, b, batch_size)

    return Metric(name, f"fitted DPL on {backbone}, weights {path.name}", distance, check)


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("psnr", "-PSNR (dB)", psnr_distance),
        Metric("ssim", "1 - SSIM (scikit-image, 7x7 window)", ssim_distance),
        Metric("ms-ssim", "1 - MS-SSIM (pytorch-msssim, 5 scales)", msssim_distance),
        *(
            Metric(
                f"lpips-{net}",
                f"LPIPS v0.1, {net} trunk (lpips package)",
                functools.partial(lpips_distance, net=net),
                functools.partial(_check_lpips_trunk, net),
            )
            for net in ("alex", "vgg", "squeeze")
        ),
        Metric(
            "stlpips-alex",
            "ST-LPIPS shift-tolerant AlexNet, its trained heads",
            stlpips_distance,
            dpl.stlpips_weights_path,
        ),
    )
}

METRICS: dict[str, Callable[..., np.ndarray]] = {
    name: metric.distance for name, metric in REGISTRY.items()
}
