"""DPL: a learned perceptual distance of the LPIPS form (``lpips`` 0.1.4, ``lpips/lpips.py``).

Read top to bottom, this file is the whole model::

    x, y in [-1, 1]            RGB, N x 3 x H x W (``to_tensor`` makes them from uint8)
    s(x) = (x - shift) / scale                       ScalingLayer
    f_l(s(x)), l = 1..5                              AlexNet trunk, taps relu1..relu5
    n(f) = f / (sqrt(sum_c f^2) + 1e-10)             unit length over channels
    phi_{l,c}(x, y) = mean_{h,w} (n(f_l(x)) - n(f_l(y)))^2_{c,h,w}
    d(x, y) = sum_{l,c} w_{l,c} phi_{l,c}(x, y),   w >= 0, no bias

``lpips.LPIPS`` computes ``mean_hw(conv1x1_w(diff))``; because a 1x1 convolution without
bias and the spatial mean are both linear, that equals ``w . phi``. So with a frozen trunk
``phi`` (1152 numbers per image pair for AlexNet) can be cached once and the weights ``w``
fitted later without touching the network again (see ``analytics.fitting``).

State-dict keys deliberately match ``lpips`` / ``stlpips`` (``scaling_layer.*``,
``net.slice{k}.{i}.*``, ``lin{l}.model.1.weight``) so their files load with ``strict=True``.

This module does not import Django.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analytics.lpips_format import load_lpips_weights

__all__ = [
    "BACKBONES",
    "CHANNELS",
    "N_FEATURES",
    "BackboneUnavailable",
    "DPL",
    "load_dpl",
    "to_tensor",
    "alexnet_checkpoint_path",
    "stlpips_weights_path",
]

BACKBONES = ("stlpips-alex", "alex", "random")
"""Backbones that ``load_dpl`` accepts.

"stlpips-alex"
    The shift-tolerant, anti-aliased AlexNet of ST-LPIPS (Ghildyal & Liu, ECCV 2022), trained
    end to end on BAPPS, from the file ``stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth``
    of the ``stlpips-pytorch`` wheel (installed with --no-deps; only the file is read, its
    code is never imported). The architecture is ``invariant_networks.alexnet(variant=
    "shift_tolerant", filter_size=3)``: the first convolution has stride 1, and every
    downsampling step is a 3x3 binomial blur [1,2,1]x[1,2,1]/16 with reflect padding 2 and
    stride 2 (max-pools have stride 1). Its own trained linear heads ``lin0..lin4`` are the
    initial weights. Works offline; the recommended backbone.
"alex"
    The torchvision AlexNet trunk (``features[0:12]``) with ImageNet weights, the trunk of the
    original LPIPS. The weights are read ONLY from the local file
    ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (torchvision's cache; TORCH_HOME
    defaults to ~/.cache/torch); nothing is downloaded. If the file is missing,
    ``BackboneUnavailable`` names it. Initial weights are all ones (pass the lpips package's
    ``lpips/weights/v0.1/alex.pth`` as ``weights=`` to get the published LPIPS heads).
"random"
    The same torchvision AlexNet shape with a seeded random (PyTorch default) initialisation.
    Only for tests and experiments, and only when asked for explicitly: nothing ever falls
    back to it. Initial weights are all ones.
"""

# Channels of the relu1..relu5 taps of AlexNet, and their total (length of phi and w).
CHANNELS = (64, 192, 384, 256, 256)
N_FEATURES = sum(CHANNELS)  # 1152

# LPIPS input normalisation (lpips.ScalingLayer), applied to inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

TORCHVISION_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
STLPIPS_WEIGHTS = ("weights", "vST0.0", "alex_shift_tolerant.pth")


class BackboneUnavailable(RuntimeError):
    """The trunk weights a backbone needs are not on this machine (we never download)."""


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


class ScalingLayer(nn.Module):
    """``(x - shift) / scale`` with the LPIPS constants (buffers, as in lpips)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class BlurPool2d(nn.Module):
    """Anti-aliased downsampling (Zhang 2019, "Making CNNs shift-invariant again").

    Same computation as ``models_lpf.downsample.Downsample(filt_size=3, stride=2,
    pad_type="reflect", pad_more=True)`` used by ST-LPIPS' shift-tolerant AlexNet: reflect-pad
    by ``filt_size - 1 = 2`` on every side, then a depthwise 3x3 binomial blur
    [1,2,1]x[1,2,1]/16 with stride 2. The filter is a buffer named ``filt``, as in the
    stlpips state dict.
    """

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        filt = filt / filt.sum()
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReflectionPad2d(2)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])


def _slices(layers: list[nn.Module], bounds: list[int]) -> list[nn.Sequential]:
    """Split ``layers`` into Sequentials at ``bounds``, keeping each layer's global index as
    its name (so keys read ``slice2.3.weight`` exactly as in lpips/stlpips)."""
    out = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        seq = nn.Sequential()
        for i in range(start, stop):
            seq.add_module(str(i), layers[i])
        out.append(seq)
    return out


class AlexNetTrunk(nn.Module):
    """AlexNet feature extractor returning the relu1..relu5 activations.

    ``variant="torchvision"`` is ``torchvision.models.alexnet().features[0:12]`` split as in
    ``lpips.pretrained_networks.alexnet``::

        slice1: 0 conv11/4 pad2 (3->64), 1 relu                          -> relu1
        slice2: 2 maxpool3/2, 3 conv5 pad2 (64->192), 4 relu             -> relu2
        slice3: 5 maxpool3/2, 6 conv3 pad1 (192->384), 7 relu            -> relu3
        slice4: 8 conv3 (384->256), 9 relu                               -> relu4
        slice5: 10 conv3 (256->256), 11 relu                             -> relu5

    ``variant="shift_tolerant"`` is stlpips ``invariant_networks.alexnet(variant=
    "shift_tolerant")`` ("blurpool, ReflectionPad2, conv1 stride 1, blur after")::

        slice1: 0 conv11/1 pad2 (3->64), 1 blurpool/2, 2 relu            -> relu1
        slice2: 3 maxpool3/1, 4 blurpool/2, 5 conv5 pad2 (64->192), 6 relu -> relu2
        slice3: 7 maxpool3/1, 8 blurpool/2, 9 conv3 (192->384), 10 relu  -> relu3
        slice4: 11 conv3 (384->256), 12 relu                             -> relu4
        slice5: 13 conv3 (256->256), 14 relu                             -> relu5

    Every strided step becomes "dense op at stride 1, then blur and subsample by 2"; since
    conv1's stride 4 becomes stride 1 + blurpool/2, the taps have strides 2, 4, 8, 8, 8
    instead of torchvision's 4, 8, 16, 16, 16 (a 64x64 patch gives 30, 15, 8, 8, 8 pixels
    instead of 15, 7, 3, 3, 3). The trailing maxpool/blurpool of the stlpips ``features``
    (indices 15, 16) feed no tap and are omitted.
    """

    def __init__(self, variant: str = "torchvision") -> None:
        super().__init__()
        if variant == "torchvision":
            layers: list[nn.Module] = [
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(),
            ]
            bounds = [0, 2, 5, 8, 10, 12]
        elif variant == "shift_tolerant":
            layers = [
                nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2),
                BlurPool2d(64),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=1),
                BlurPool2d(64),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=1),
                BlurPool2d(192),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(),
            ]
            bounds = [0, 3, 7, 11, 13, 15]
        else:
            raise ValueError(f"unknown AlexNet variant {variant!r}")
        self.variant = variant
        self.slice1, self.slice2, self.slice3, self.slice4, self.slice5 = _slices(layers, bounds)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for s in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = s(x)
            taps.append(x)
        return taps


class LinearHead(nn.Module):
    """The per-channel weights of one tap, stored like lpips' ``NetLinLayer``:
    ``model = [Dropout, Conv2d(C, 1, 1x1, bias=False)]``, hence the key
    ``lin{l}.model.1.weight`` of shape (1, C, 1, 1). Dropout only mattered while LPIPS
    trained; we never run the head in train mode (``DPL.forward`` uses ``phi . w``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))
        nn.init.ones_(self.model[1].weight)

    @property
    def weight(self) -> torch.Tensor:
        return self.model[1].weight


def normalize_channels(f: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Unit length over channels, exactly lpips.normalize_tensor."""
    return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + eps)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class DPL(nn.Module):
    """d(x, y) = w . phi(x, y) with a frozen AlexNet trunk (see the module docstring)."""

    def __init__(self, trunk: str = "torchvision", backbone: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.scaling_layer = ScalingLayer()
        self.net = AlexNetTrunk(trunk)
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (LinearHead(c) for c in CHANNELS)
        self.requires_grad_(False)
        self.eval()

    @property
    def lins(self) -> list[LinearHead]:
        # A property, not a ModuleList, so the state dict holds each head once (lin{l}.*).
        return [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]

    @staticmethod
    def _check_inputs(x: torch.Tensor, y: torch.Tensor, paired: bool = True) -> None:
        for t in (x, y):
            if not torch.is_tensor(t) or not t.is_floating_point():
                raise TypeError("DPL expects float tensors in [-1, 1]; use dpl.to_tensor(uint8)")
            if t.ndim != 4 or t.shape[1] != 3:
                raise ValueError(f"expected N x 3 x H x W, got {tuple(t.shape)}")
        if (x.shape if paired else x.shape[1:]) != (y.shape if paired else y.shape[1:]):
            raise ValueError(
                f"both images must have the same shape: {tuple(x.shape)} vs {tuple(y.shape)}"
            )

    def features_diff(
        self, x: torch.Tensor, y: torch.Tensor, x_of: torch.Tensor | None = None
    ) -> torch.Tensor:
        """phi(x, y), shape (N, 1152): per channel, the spatial mean of the squared difference
        of channel-normalised features, layers concatenated in order relu1..relu5.

        With ``x_of`` (one index into x per y), phi(x[x_of[i]], y[i]): a few references
        against many distorted images, each reference through the trunk once."""
        self._check_inputs(x, y, paired=x_of is None)
        n = x.shape[0]
        # One trunk pass over both images (same result as two passes; eval mode, no BN).
        taps = self.net(self.scaling_layer(torch.cat([x, y], dim=0)))
        phis = []
        for f in taps:
            fx, fy = normalize_channels(f[:n]), normalize_channels(f[n:])
            if x_of is not None:
                fx = fx[x_of]
            phis.append(((fx - fy) ** 2).mean(dim=(2, 3)))
        return torch.cat(phis, dim=1)

    def weight_vector(self) -> torch.Tensor:
        """w as a (1152,) tensor, on the model's device."""
        return torch.cat([lin.weight.reshape(-1) for lin in self.lins])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(x, y), shape (N,)."""
        return self.features_diff(x, y) @ self.weight_vector()

    def set_weights(self, w: np.ndarray | torch.Tensor) -> None:
        """Replace w (1152 non-negative finite numbers, in layer order)."""
        if torch.is_tensor(w):
            w = w.detach().cpu()
        w = torch.as_tensor(np.asarray(w, dtype=np.float32))
        if w.shape != (N_FEATURES,):
            raise ValueError(f"weights must have shape ({N_FEATURES},), got {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError("weights must be finite")
        if (w < 0).any():
            raise ValueError("DPL weights must be >= 0 (as in lpips, whose training clamps them)")
        with torch.no_grad():
            for lin, part in zip(self.lins, torch.split(w, CHANNELS), strict=True):
                lin.weight.copy_(part.reshape(lin.weight.shape))

    def weights(self) -> np.ndarray:
        """w as a float32 numpy array of shape (1152,)."""
        return self.weight_vector().detach().cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def alexnet_checkpoint_path() -> Path:
    """Where torchvision caches AlexNet's ImageNet weights: $TORCH_HOME/hub/checkpoints/...
    (torch.hub.get_dir() reads TORCH_HOME / XDG_CACHE_HOME at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET_FILE


def stlpips_weights_path() -> Path:
    """The shift-tolerant AlexNet file inside the installed stlpips-pytorch wheel.

    Found with ``importlib.util.find_spec``, which locates the package without executing
    its (broken) code."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailable(
            "backbone 'stlpips-alex' needs the stlpips-pytorch wheel "
            "(pip install --no-deps stlpips-pytorch==0.0.2) for its file "
            + "/".join(("stlpips_pytorch",) + STLPIPS_WEIGHTS)
        )
    for base in spec.submodule_search_locations:
        p = Path(base).joinpath(*STLPIPS_WEIGHTS)
        if p.is_file():
            return p
    raise BackboneUnavailable(
        "backbone 'stlpips-alex' needs the file "
        f"{Path(next(iter(spec.submodule_search_locations))).joinpath(*STLPIPS_WEIGHTS)}, "
        "which is missing"
    )


def _torchvision_trunk_state(path: Path) -> dict[str, torch.Tensor]:
    """Read torchvision's ``features.{i}.*`` tensors into our ``slice{k}.{i}.*`` names."""
    if not path.is_file():
        raise BackboneUnavailable(
            f"backbone 'alex' needs the ImageNet AlexNet weights at {path} "
            "(torchvision's alexnet-owt-7be5be79.pth); nothing is downloaded. Copy the file "
            "there (or set TORCH_HOME), or use backbone 'stlpips-alex'."
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / not a state dict
        raise BackboneUnavailable(f"cannot read AlexNet weights from {path}: {exc}") from exc
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    out = {}
    for i, k in slice_of.items():
        for p in ("weight", "bias"):
            key = f"features.{i}.{p}"
            if key not in sd:
                raise BackboneUnavailable(
                    f"{path} is not a torchvision AlexNet state dict (no {key})"
                )
            out[f"slice{k}.{i}.{p}"] = sd[key]
    return out


def load_dpl(backbone: str, *, weights: str | Path | None = None, seed: int = 0) -> DPL:
    """Build a DPL for ``backbone`` (one of BACKBONES), in eval mode, without gradients.

    Initial w: the wheel's trained heads for "stlpips-alex", all ones otherwise. If
    ``weights`` is an lpips-format .pth (keys ``lin{l}.model.1.weight``), w is read from it
    instead, strictly (see ``analytics.lpips_format.load_lpips_weights``).
    """
    if backbone == "stlpips-alex":
        model = DPL("shift_tolerant", backbone=backbone)
        sd = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
        # strict: every trunk tensor, blur filter, scaling constant and head must be used.
        model.load_state_dict(sd, strict=True)
    elif backbone == "alex":
        model = DPL("torchvision", backbone=backbone)
        model.net.load_state_dict(_torchvision_trunk_state(alexnet_checkpoint_path()), strict=True)
    elif backbone == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DPL("torchvision", backbone=backbone)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")

    if weights is not None:
        model.set_weights(load_lpips_weights(weights))
    model.requires_grad_(False)
    return model.eval()


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB images, N x H x W x 3 (or one H x W x 3), to a float32 N x 3 x H x W tensor in
    [-1, 1], the lpips convention (``lpips.im2tensor``: x / 127.5 - 1)."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise TypeError(f"to_tensor expects uint8 images, got {a.dtype}")
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 uint8, got shape {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0
