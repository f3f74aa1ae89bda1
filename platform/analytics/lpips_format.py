"""Read and write DPL weights as lpips weight files (``lpips`` 0.1.4).

An lpips AlexNet weight file is a state dict with exactly five tensors::

    lin{l}.model.1.weight   shape (1, C_l, 1, 1), float32,   C = 64, 192, 384, 256, 256

(index 1 because lpips' ``NetLinLayer`` is ``[Dropout, Conv2d]``). A file written by
``save_lpips_weights`` loads with ``lpips.LPIPS(net="alex", model_path=FILE)`` and gives the
same distances as our DPL on the same trunk.

The file holds heads only, not which trunk produced the phi they were fitted on: weights
fitted on the "stlpips-alex" trunk are meaningless on lpips' torchvision trunk, so keep the
backbone name next to the file.

``lpips`` loads with ``strict=False``: wrong keys are silently ignored and the heads stay
random. ``load_lpips_weights`` is strict instead and raises ``ValueError``.

This module does not import Django.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

CHANNELS = (64, 192, 384, 256, 256)
N_FEATURES = sum(CHANNELS)  # 1152

__all__ = ["save_lpips_weights", "load_lpips_weights", "lpips_keys"]


def lpips_keys() -> list[tuple[str, tuple[int, int, int, int]]]:
    """The expected (key, shape) pairs, in layer order."""
    return [(f"lin{i}.model.1.weight", (1, c, 1, 1)) for i, c in enumerate(CHANNELS)]


def save_lpips_weights(w: np.ndarray, path: str | Path) -> Path:
    """Write the 1152 weights as an lpips state dict at ``path``; returns the path.

    Raises ValueError unless ``w`` has 1152 finite, non-negative entries.
    """
    w = np.asarray(w.detach().cpu() if torch.is_tensor(w) else w, dtype=np.float32)
    if w.shape != (N_FEATURES,):
        raise ValueError(f"weights must have shape ({N_FEATURES},), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    if (w < 0).any():
        raise ValueError("lpips weights must be >= 0")
    parts = np.split(w, np.cumsum(CHANNELS)[:-1])
    state = {
        key: torch.from_numpy(part.copy()).reshape(shape)
        for (key, shape), part in zip(lpips_keys(), parts, strict=True)
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def load_lpips_weights(path: str | Path) -> np.ndarray:
    """Read the 1152 weights (float32, layer order) from an lpips-format file.

    Extra keys are allowed (so a full lpips/stlpips checkpoint with ``net.*`` tensors works);
    a missing or wrongly shaped ``lin{l}.model.1.weight`` raises ValueError.
    """
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable torch state dict: {exc}") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    parts = []
    for key, shape in lpips_keys():
        if key not in state:
            found = ", ".join(sorted(map(str, state))[:8]) or "nothing"
            raise ValueError(f"{path} lacks {key!r} (found: {found})")
        t = state[key]
        if not torch.is_tensor(t) or tuple(t.shape) != shape:
            got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{path}: {key!r} has shape {got}, expected {shape}")
        parts.append(t.detach().float().reshape(-1).numpy())
    w = np.concatenate(parts).astype(np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"{path}: weights are not finite")
    return w
