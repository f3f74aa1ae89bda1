"""Aggregate votes: per-triplet judge fractions, and scales of conditions from pairwise wins.

A triplet compares two conditions (codec x level) on one reference; a vote for p1 is a
win of p1's condition over p0's ("closer to the reference" = better quality). From the
wins on one reference (or on all of them pooled) we fit two scales, both solved by
``choix``:

- **Bradley-Terry**: P(i beats j) = 1 / (1 + exp(-(b_i - b_j))), log-strengths ``b`` from
  ``choix.ilsr_pairwise`` (iterative Luce spectral ranking; its ``alpha`` adds ``ALPHA``
  pseudo-comparisons between every pair, so a condition that always wins stays finite).
- **Thurstone Case V**: P(i beats j) = Phi(t_i - t_j), the posterior mean of ``t`` from
  ``choix.ep_pairwise(model="probit")`` (expectation propagation; ``alpha`` = ``ALPHA`` is
  the precision of a zero-mean Gaussian prior). Reported in JND units as in pwcmp, where
  1 JND is the difference that 75% prefer: q = t / Phi^-1(0.75), with its posterior
  standard deviation in the same units.

Both scales are centred (mean 0 over the conditions of that reference).

This module does not import Django.
"""

from __future__ import annotations

from collections.abc import Sequence

import choix
import numpy as np
from scipy.stats import norm

__all__ = ["ALPHA", "JND_PROBIT", "comparisons", "judge_fractions", "scale", "scale_by"]

ALPHA = 0.1
"""Regularisation of both solvers (see the module docstring)."""

JND_PROBIT = float(norm.ppf(0.75))
"""Probit difference of 1 JND (75% preference): ~0.674."""


def judge_fractions(n_p0, n_p1) -> np.ndarray:
    """Per triplet, the fraction of votes for p1 (the BAPPS judge); nan without votes."""
    n0 = np.asarray(n_p0, dtype=np.float64)
    n1 = np.asarray(n_p1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return n1 / (n0 + n1)


def comparisons(item_p0, item_p1, n_p0, n_p1) -> list[tuple[int, int]]:
    """choix's pairwise data: one (winner, loser) per vote. ``item_p0``/``item_p1`` are the
    integer items (conditions) of each triplet's sides."""
    out: list[tuple[int, int]] = []
    for a, b, w0, w1 in zip(item_p0, item_p1, n_p0, n_p1, strict=True):
        out += [(int(a), int(b))] * int(w0) + [(int(b), int(a))] * int(w1)
    return out


def scale(labels_p0: Sequence[str], labels_p1: Sequence[str], n_p0, n_p1) -> dict:
    """Bradley-Terry and Thurstone scales of the conditions compared in these triplets.

    Returns condition -> {"bradley_terry", "thurstone_jnd", "thurstone_sd", "wins",
    "comparisons"}, conditions in sorted order."""
    names = sorted(set(labels_p0) | set(labels_p1))
    index = {name: i for i, name in enumerate(names)}
    data = comparisons([index[x] for x in labels_p0], [index[x] for x in labels_p1], n_p0, n_p1)
    n = len(names)
    wins = np.bincount([w for w, _ in data], minlength=n)
    played = wins + np.bincount([loser for _, loser in data], minlength=n)
    if n < 2 or not data:
        bt = thurstone = sd = np.zeros(n)
    else:
        bt = choix.ilsr_pairwise(n, data, alpha=ALPHA)
        mean, cov = choix.ep_pairwise(n, data, alpha=ALPHA, model="probit")
        thurstone = (mean - mean.mean()) / JND_PROBIT
        sd = np.sqrt(np.diag(cov)) / JND_PROBIT
        bt = bt - bt.mean()
    return {
        name: {
            "bradley_terry": float(bt[i]),
            "thurstone_jnd": float(thurstone[i]),
            "thurstone_sd": float(sd[i]),
            "wins": int(wins[i]),
            "comparisons": int(played[i]),
        }
        for name, i in index.items()
    }


def scale_by(groups: Sequence, labels_p0, labels_p1, n_p0, n_p1) -> dict:
    """``scale`` within each group (e.g. per reference patch): group -> condition -> ...,
    groups in sorted order, keys as strings."""
    groups = np.asarray(groups)
    labels_p0, labels_p1 = np.asarray(labels_p0), np.asarray(labels_p1)
    n_p0, n_p1 = np.asarray(n_p0), np.asarray(n_p1)
    return {
        str(group): scale(
            labels_p0[groups == group].tolist(),
            labels_p1[groups == group].tolist(),
            n_p0[groups == group],
            n_p1[groups == group],
        )
        for group in sorted(set(groups.tolist()))
    }
