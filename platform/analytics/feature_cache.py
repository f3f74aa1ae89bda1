"""φ per stimulus, computed once and kept on disk (d is linear in the weights: ``analytics.dpl``).

A stimulus is a (reference, distorted) pair; its φ (1152 float32 numbers for AlexNet) depends
only on the frozen trunk and the two images. So the cache is keyed by

- the **trunk**: the backbone name plus a hash of every trunk tensor (``trunk_identity``), so a
  different checkpoint never reads another's features; and
- the **stimulus**: its id plus a hash of both images' pixels (``stimulus_key``), so a
  re-generated stimulus with the same id is computed again.

Storage: one folder per trunk holding shard files ``<uuid>.npz`` (``keys``, ``phi``); each
run that computes something new adds one shard, written to a temporary name and renamed, so a
crashed run leaves nothing half-written. This is a local cache (like torch's hub cache), not
media: it lives under a folder on the worker's disk and can be deleted at any time.

``features_for`` is the entry point: it reads what is cached, computes the rest in batches
(CUDA when available), each reference going through the trunk once per batch it appears in,
stores the new rows and returns φ in the order asked.

This module does not import Django.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analytics.dpl import DPL, N_FEATURES, to_tensor
from analytics.fitting import features_in_batches

__all__ = ["FeatureCache", "CachedFeatures", "features_for", "stimulus_key", "trunk_identity"]


def trunk_identity(net: DPL) -> str:
    """``<backbone>-<sha256 of the trunk and scaling tensors, 16 hex>``: heads are left out,
    since φ does not depend on them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        if name.startswith("lin"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{net.backbone or 'custom'}-{digest.hexdigest()[:16]}"


def stimulus_key(stimulus_id, reference: np.ndarray, image: np.ndarray) -> str:
    """``<id>-<sha256 of both images' shape and pixels, 16 hex>``."""
    digest = hashlib.sha256()
    for a in (reference, image):
        a = np.ascontiguousarray(a)
        digest.update(repr((a.shape, a.dtype.str)).encode())
        digest.update(a.tobytes())
    return f"{stimulus_id}-{digest.hexdigest()[:16]}"


class FeatureCache:
    """φ rows by stimulus key for one trunk, in ``root / namespace``."""

    def __init__(self, root: str | Path, namespace: str) -> None:
        if not namespace or "/" in namespace or namespace.startswith("."):
            raise ValueError(f"bad cache namespace {namespace!r}")
        self.folder = Path(root) / namespace

    def load(self) -> dict[str, np.ndarray]:
        """Every cached row. An unreadable shard (e.g. truncated by a full disk) is skipped:
        its rows are simply computed again."""
        rows: dict[str, np.ndarray] = {}
        if not self.folder.is_dir():
            return rows
        for shard in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, phi = z["keys"], z["phi"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue
            if phi.ndim != 2 or phi.shape[1] != N_FEATURES or len(keys) != len(phi):
                continue
            rows.update(zip(keys.tolist(), phi, strict=True))
        return rows

    def store(self, keys: Sequence[str], phi: np.ndarray) -> Path | None:
        """Add one shard with these rows (nothing for zero rows); returns its path."""
        if len(keys) == 0:
            return None
        phi = np.asarray(phi, dtype=np.float32)
        if phi.shape != (len(keys), N_FEATURES):
            raise ValueError(f"phi must have shape ({len(keys)}, {N_FEATURES}), got {phi.shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = self.folder / f".{name}.tmp"
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, keys=np.asarray(list(keys), dtype=str), phi=phi)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        final = self.folder / f"{name}.npz"
        os.replace(tmp, final)
        return final


@dataclass
class CachedFeatures:
    phi: np.ndarray  # (S, 1152) float32, in the order of the keys asked for
    computed: int  # how many rows went through the trunk in this call


def compute_stimulus_features(
    net: DPL,
    references: np.ndarray,
    stimuli: np.ndarray,
    ref_of: np.ndarray,
    *,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """φ(references[ref_of[i]], stimuli[i]) for every i, float32 (S, 1152).

    ``references`` (R, H, W, 3) and ``stimuli`` (S, H, W, 3) are uint8. Stimuli go in batches
    of ``batch_size`` in the order given (sort them by reference to run each reference once);
    each batch runs its distinct references and its stimuli through the trunk in one pass.
    CUDA when available, else CPU. ``progress(done, total)`` after every batch.
    """
    ref_of = np.asarray(ref_of, dtype=np.int64)
    if len(ref_of) != len(stimuli):
        raise ValueError(f"{len(stimuli)} stimuli but {len(ref_of)} reference indices")

    def batch(start: int, stop: int, device: torch.device) -> torch.Tensor:
        used, local = np.unique(ref_of[start:stop], return_inverse=True)
        refs = to_tensor(np.asarray(references)[used]).to(device)
        shown = to_tensor(np.asarray(stimuli[start:stop])).to(device)
        return net.features_diff(refs, shown, torch.from_numpy(local.reshape(-1)).to(device))

    return features_in_batches(net, len(stimuli), batch, batch_size, progress)


def features_for(
    net: DPL,
    cache: FeatureCache | None,
    keys: Sequence[str],
    references: np.ndarray,
    stimuli: np.ndarray,
    ref_of: np.ndarray,
    *,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> CachedFeatures:
    """φ for every stimulus, from ``cache`` where present, computed (and stored) otherwise.

    ``keys[i]`` names stimulus i (``stimulus_key``); ``stimuli`` may be any indexable of
    uint8 arrays (only the missing ones are read). ``cache=None`` computes everything.
    ``progress(done, total)`` counts the stimuli to compute.
    """
    n = len(keys)
    ref_of = np.asarray(ref_of, dtype=np.int64)
    if len(ref_of) != n:
        raise ValueError(f"{n} keys but {len(ref_of)} reference indices")
    cached = cache.load() if cache is not None else {}
    phi = np.empty((n, N_FEATURES), dtype=np.float32)
    missing = []
    for i, key in enumerate(keys):
        row = cached.get(key)
        if row is None:
            missing.append(i)
        else:
            phi[i] = row
    if missing:
        order = np.asarray(missing)[np.argsort(ref_of[missing], kind="stable")]
        new = compute_stimulus_features(
            net,
            references,
            np.stack([stimuli[i] for i in order]),
            ref_of[order],
            batch_size=batch_size,
            progress=progress,
        )
        phi[order] = new
        if cache is not None:
            cache.store([keys[i] for i in order], new)
    elif progress is not None:
        progress(0, 0)
    return CachedFeatures(phi=phi, computed=len(missing))
