"""Fit DPL weights to 2AFC votes (LPIPS's ``train.py`` and ``lpips/trainer.py``); scores are in ``analytics.scoring``.

Pipeline: ``compute_features`` runs the frozen trunk once per (reference, distorted) pair
and caches phi (N x 1152). Because d = w . phi, ``fit_weights`` then trains only the 1152
non-negative weights (plus, for the ranking loss, the tiny judge network G) on those cached
vectors, which takes seconds on a CPU.

This module does not import Django.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from analytics.dpl import DPL, N_FEATURES, to_tensor

__all__ = [
    "FitResult",
    "compute_features",
    "fit_weights",
    "split_by_group",
]


# --------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------


def _as_batch(images, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x 3 arrays go through ``to_tensor``; float tensors in [-1, 1] pass."""
    if torch.is_tensor(images) and images.is_floating_point():
        return images.to(device)
    return to_tensor(np.asarray(images)).to(device)


def compute_features(
    net: DPL,
    refs,
    dists,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """phi(ref_i, dist_i) for every pair, float32 array (N, 1152).

    ``refs``/``dists``: uint8 arrays N x H x W x 3 (or float tensors N x 3 x H x W in
    [-1, 1]) of equal shape. Runs in batches under ``torch.no_grad()`` on CUDA when
    available, else CPU (the model is moved there). ``progress(done, total)`` is called after
    every batch.
    """
    if len(dists) != len(refs):
        raise ValueError(f"{len(refs)} references but {len(dists)} distorted images")

    def batch(start: int, stop: int, device: torch.device) -> torch.Tensor:
        x = _as_batch(refs[start:stop], device)
        return net.features_diff(x, _as_batch(dists[start:stop], device))

    return features_in_batches(net, len(refs), batch, batch_size, progress)


def features_in_batches(
    net: DPL,
    n: int,
    batch: Callable[[int, int, torch.device], torch.Tensor],
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Rows [start, stop) of an (n, 1152) float32 φ array from ``batch(start, stop, device)``,
    batch by batch under ``torch.no_grad()``, on CUDA when available (the model is moved
    there), else CPU. ``progress(done, n)`` after every batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device).eval()
    out = np.empty((n, N_FEATURES), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out[start:stop] = batch(start, stop, device).float().cpu().numpy()
            if progress is not None:
                progress(stop, n)
    return out


# --------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------


@dataclass
class FitResult:
    weights: np.ndarray  # (1152,), float32, all >= 0
    loss_history: list[float] = field(default_factory=list)  # mean training loss per epoch
    epochs: int = 0


class JudgeNet(nn.Module):
    """G of LPIPS (``lpips.Dist2LogitLayer``): from (d0, d1, d0-d1, d0/(d1+eps), d1/(d0+eps))
    through 5 -> 32 -> 32 -> 1 with LeakyReLU(0.2); returns the logit of P(p1 chosen)
    (the sigmoid is folded into BCEWithLogits for numerical stability)."""

    def __init__(self, chn_mid: int = 32, eps: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.model = nn.Sequential(
            nn.Linear(5, chn_mid),
            nn.LeakyReLU(0.2),
            nn.Linear(chn_mid, chn_mid),
            nn.LeakyReLU(0.2),
            nn.Linear(chn_mid, 1),
        )

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        e = self.eps
        x = torch.stack((d0, d1, d0 - d1, d0 / (d1 + e), d1 / (d0 + e)), dim=1)
        return self.model(x).squeeze(1)


def _epoch_lr(lr: float, epoch: int, epochs: int) -> float:
    """LPIPS schedule (train.py): the first ceil(epochs/2) epochs at ``lr``; then after each
    further epoch the rate drops by lr/n_decay, so epoch k of the decay phase (1-based) runs at
    lr * (1 - (k-1)/n_decay): for 10 epochs 1,1,1,1,1, 1,.8,.6,.4,.2."""
    n_decay = epochs // 2
    n_const = epochs - n_decay
    if epoch < n_const or n_decay == 0:
        return lr
    return lr * (1.0 - (epoch - n_const) / n_decay)


def fit_weights(
    phi0: np.ndarray,
    phi1: np.ndarray,
    judge: np.ndarray,
    *,
    loss: str = "rank",
    epochs: int = 10,
    lr: float | None = None,
    batch_size: int = 50,
    seed: int = 0,
    init: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Fit non-negative w so that d0 = phi0 . w, d1 = phi1 . w agree with the votes.

    ``judge``: fraction of raters that chose p1 (the BAPPS judge), in [0, 1].

    ``loss="rank"``: the LPIPS ranking loss, BCE(judge, sigmoid(G(d0, d1))) with G a
    5->32->32->1 network trained jointly with w (``JudgeNet``).
    ``loss="logistic"``: P(p1 chosen) = sigmoid(s * (d0 - d1)) with one learned scale
    s = exp(log_s) > 0 (initialised so that s * std(d0 - d1) = 1).

    Both: Adam with betas (0.5, 0.999) and mini-batches of 50 as LPIPS; after every step
    w is clamped to >= 0; the LPIPS schedule of a constant rate for the first half of the
    epochs then a linear decay (``_epoch_lr``). ``init`` is the starting w (e.g. the
    backbone's own heads, ``net.weights()``); default all ones.

    Learning rate: LPIPS uses 1e-4 for heads of scale ~0.1 over ~30k steps (BAPPS train,
    ~150k triplets x 10 epochs). A study gives far fewer steps (10k triplets x 10 epochs =
    2000), and Adam moves each weight by about ``lr`` per step whatever the gradient's size,
    so the right rate is proportional to the weights' own scale. ``lr=None`` (default) takes
    ``2e-2 * mean(init)``: 2e-2 from all-ones, ~1.2e-3 from the stlpips heads (mean ~0.06).
    On synthetic data (1152 independent gamma features, sparse hidden w) this recovers the
    hidden weights' 2AFC within 0.01 from 10k triplets, where 1e-3 from ones barely moves.
    Pass ``lr`` to override. ``progress(epoch, epochs)`` is called after every epoch.
    The LPIPS dropout (0.5 before each 1x1 layer) acts on per-pixel
    differences that we have already averaged away, so it is not reproduced.
    """
    if loss not in ("rank", "logistic"):
        raise ValueError(f"loss must be 'rank' or 'logistic', got {loss!r}")
    phi0_t = torch.as_tensor(np.asarray(phi0, dtype=np.float32))
    phi1_t = torch.as_tensor(np.asarray(phi1, dtype=np.float32))
    judge_t = torch.as_tensor(np.asarray(judge, dtype=np.float32)).reshape(-1)
    n = phi0_t.shape[0]
    if phi0_t.ndim != 2 or phi0_t.shape != phi1_t.shape or judge_t.shape[0] != n:
        raise ValueError(
            f"shapes disagree: phi0 {tuple(phi0_t.shape)}, phi1 {tuple(phi1_t.shape)}, "
            f"judge {tuple(judge_t.shape)}"
        )
    if n == 0:
        raise ValueError("no triplets to fit")
    if not ((judge_t >= 0) & (judge_t <= 1)).all():
        raise ValueError("judge values must lie in [0, 1]")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g_net = JudgeNet() if loss == "rank" else None

    w0 = np.ones(phi0_t.shape[1], np.float32) if init is None else np.asarray(init, np.float32)
    if w0.shape != (phi0_t.shape[1],):
        raise ValueError(f"init must have shape ({phi0_t.shape[1]},), got {w0.shape}")
    w = nn.Parameter(torch.from_numpy(w0.copy()).clamp_(min=0))
    if lr is None:
        scale = float(w.detach().mean())
        lr = 2e-2 * (scale if scale > 0 else 1.0)
    if not lr > 0:
        raise ValueError("lr must be > 0")

    params: list[torch.Tensor] = [w]
    if g_net is not None:
        params += list(g_net.parameters())
        log_s = None
    else:
        with torch.no_grad():
            spread = float(((phi0_t - phi1_t) @ w).std()) if n > 1 else 0.0
        log_s = nn.Parameter(torch.tensor(-math.log(spread) if spread > 1e-12 else 0.0))
        params.append(log_s)

    # fused: one kernel for the whole update; the steps are tiny, so this saves ~35% per step.
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), fused=True)
    bce = nn.BCEWithLogitsLoss()
    history: list[float] = []
    # The ops are tiny (50 x 1152); intra-op threads only add overhead, and on a busy
    # machine they make each step wait for a second core. Run single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for epoch in range(epochs):
            for group in opt.param_groups:
                group["lr"] = _epoch_lr(lr, epoch, epochs)
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                d0 = phi0_t[idx] @ w
                d1 = phi1_t[idx] @ w
                if g_net is not None:
                    logit = g_net(d0, d1)  # rank: learned G(d0, d1)
                else:
                    logit = log_s.exp() * (d0 - d1)  # logistic: s (d0 - d1)
                batch_loss = bce(logit, judge_t[idx])
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                with torch.no_grad():
                    w.clamp_(min=0)
                total += batch_loss.item() * len(idx)
            history.append(total / n)
            if progress is not None:
                progress(epoch + 1, epochs)
    finally:
        torch.set_num_threads(threads)

    weights = w.detach().numpy().astype(np.float32).copy()
    return FitResult(weights=weights, loss_history=history, epochs=epochs)


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------


def split_by_group(
    groups, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test boolean masks over triplets such that no group (source image id) is in
    both. ``round(test_fraction * n_groups)`` whole groups (at least 1, at most n_groups - 1
    when there are >= 2 groups) go to test, chosen at random with ``seed``; with a single
    group everything is train."""
    groups = np.asarray(groups)
    if groups.ndim != 1:
        groups = groups.reshape(-1)
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError("test_fraction must be in [0, 1]")
    uniq, inverse = np.unique(groups, return_inverse=True)
    k = len(uniq)
    if k < 2:
        train = np.ones(len(groups), dtype=bool)
        return train, ~train
    n_test = int(min(max(round(test_fraction * k), 1), k - 1))
    rng = np.random.default_rng(seed)
    test_groups = np.zeros(k, dtype=bool)
    test_groups[rng.permutation(k)[:n_test]] = True
    test = test_groups[inverse]
    return ~test, test
