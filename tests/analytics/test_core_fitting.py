"""Feature caching, weight fitting and scoring (Zhang et al., CVPR 2018; lpips 0.1.4)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from analytics.dpl import load_dpl, to_tensor
from analytics.fitting import (
    FitResult,
    _epoch_lr,
    compute_features,
    fit_weights,
    split_by_group,
)
from analytics.scoring import human_ceiling, score_2afc


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


# ---------------------------------------------------------------------- scoring


def test_score_2afc_hand_computed():
    d0 = [1.0, 2.0, 3.0, 0.5]
    d1 = [2.0, 1.0, 3.0, 0.4]
    g = [0.0, 1.0, 0.3, 0.4]
    # (d0<d1)(1-g): 1 | (d1<d0)g: 1 | tie: 0.5 | (d1<d0)g: 0.4
    assert score_2afc(d0, d1, g) == pytest.approx((1 + 1 + 0.5 + 0.4) / 4)
    # a metric that always ties scores 0.5 whatever the votes
    assert score_2afc([1, 1, 1], [1, 1, 1], [0.0, 0.2, 1.0]) == 0.5
    # fractional judges: agreement with one random rater, not majority accuracy
    assert score_2afc([0.0], [1.0], [0.25]) == pytest.approx(0.75)


def test_human_ceiling_leave_one_out():
    # n0, n1 -> (n1(n1-1) + n0(n0-1)) / (n(n-1))
    # 5-0 -> 1; 3-2 -> (2+6)/20 = 0.4; 1-1 -> 0; 0-1 (n=1) ignored; 0-0 ignored
    n0 = [5, 3, 1, 0, 0]
    n1 = [0, 2, 1, 1, 0]
    assert human_ceiling(n0, n1) == pytest.approx((1 + 0.4 + 0) / 3)
    assert np.isnan(human_ceiling([1, 0], [0, 1]))


def test_human_ceiling_is_unbiased():
    """Averaged over many simulated raters it matches g^2 + (1-g)^2 (the plug-in does not)."""
    rng = np.random.default_rng(0)
    g, n = 0.7, 3
    n1 = rng.binomial(n, g, size=200_000)
    assert human_ceiling(n - n1, n1) == pytest.approx(g**2 + (1 - g) ** 2, abs=3e-3)


def test_split_by_group_has_no_overlap():
    groups = np.repeat(np.array(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]), 7)
    train, test = split_by_group(groups, test_fraction=0.3, seed=5)
    assert train.dtype == bool and (train ^ test).all()
    assert set(groups[train]).isdisjoint(groups[test])
    assert len(set(groups[test])) == 3
    again = split_by_group(groups, test_fraction=0.3, seed=5)
    assert (again[0] == train).all()
    # two groups: both sides non-empty even with a tiny or huge fraction
    for frac in (0.0, 0.01, 0.99, 1.0):
        tr, te = split_by_group([1, 1, 2, 2, 2], test_fraction=frac)
        assert tr.any() and te.any()
    tr, te = split_by_group([7, 7, 7])
    assert tr.all() and not te.any()


# ---------------------------------------------------------------------- compute_features


def test_compute_features_matches_model_and_reports_progress():
    model = load_dpl("random")
    img = skdata.chelsea()
    refs = np.stack([img[i : i + 64, 2 * i : 2 * i + 64] for i in range(0, 70, 10)])
    dists = np.clip(refs.astype(int) + 20, 0, 255).astype(np.uint8)
    calls = []
    phi = compute_features(
        model, refs, dists, batch_size=3, progress=lambda d, t: calls.append((d, t))
    )
    assert phi.shape == (7, 1152) and phi.dtype == np.float32
    assert calls == [(3, 7), (6, 7), (7, 7)]
    with torch.no_grad():
        expected = model.cpu().features_diff(to_tensor(refs), to_tensor(dists)).numpy()
    np.testing.assert_allclose(phi, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- fitting


def _simulate_votes(phi0, phi1, hidden, rng, votes=5, sharpness=4.0):
    """Raters choose p1 with probability sigmoid(k (d0 - d1)) under the hidden metric."""
    delta = (phi0 - phi1) @ hidden
    k = sharpness / delta.std()
    n1 = rng.binomial(votes, 1 / (1 + np.exp(-k * delta)))
    return n1 / votes


@pytest.fixture(scope="module")
def synthetic():
    """Independent gamma-distributed phi (like squared feature differences) and a sparse
    hidden non-negative weight vector: all-ones weights are near chance here."""
    rng = np.random.default_rng(1)
    hidden = rng.exponential(1.0, 1152) * (rng.random(1152) < 0.1)

    def draw(n):
        return (rng.gamma(0.5, 0.02, (n, 1152)).astype(np.float32) for _ in range(2))

    f0, f1 = draw(10_000)
    t0, t1 = draw(3000)
    return (
        hidden,
        (f0, f1, _simulate_votes(f0, f1, hidden, rng)),
        (t0, t1, _simulate_votes(t0, t1, hidden, rng)),
    )


@pytest.mark.parametrize("loss", ["rank", "logistic"])
def test_fit_recovers_hidden_preference(synthetic, loss):
    hidden, (f0, f1, g), (t0, t1, gt) = synthetic
    hidden_score = score_2afc(t0 @ hidden, t1 @ hidden, gt)
    ones_score = score_2afc(t0.sum(1), t1.sum(1), gt)
    result = fit_weights(f0, f1, g, loss=loss, epochs=10, seed=0)
    assert isinstance(result, FitResult)
    w = result.weights
    assert w.shape == (1152,) and w.dtype == np.float32 and (w >= 0).all()
    assert result.epochs == 10 and len(result.loss_history) == 10
    assert result.loss_history[-1] < result.loss_history[0]
    fitted = score_2afc(t0 @ w, t1 @ w, gt)
    assert ones_score < 0.6 < 0.8 < fitted  # far above chance and the starting point
    assert fitted > hidden_score - 0.015
    assert np.corrcoef(w, hidden)[0, 1] > 0.95


def _patches(rng, n, size=64):
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    refs, groups = [], []
    for _ in range(n):
        k = rng.integers(len(photos))
        img = photos[k]
        y, x = rng.integers(img.shape[0] - size), rng.integers(img.shape[1] - size)
        refs.append(img[y : y + size, x : x + size])
        groups.append(f"{k}-{y // 128}-{x // 128}")
    return np.stack(refs), np.array(groups)


def _distort(patch, rng):
    kind, s = rng.integers(3), rng.random()
    if kind == 0:
        out = patch + rng.normal(0, 3 + 40 * s, patch.shape)
    elif kind == 1:
        buf = io.BytesIO()
        Image.fromarray(patch).save(buf, format="JPEG", quality=int(5 + 70 * (1 - s)))
        out = np.asarray(Image.open(buf).convert("RGB"))
    else:
        small = Image.fromarray(patch).resize((16 + int(40 * (1 - s)),) * 2, Image.BILINEAR)
        out = np.asarray(small.resize(patch.shape[:2][::-1], Image.BILINEAR))
    return np.clip(out, 0, 255).astype(np.uint8)


def test_fit_on_real_features_from_photos():
    """phi from a (seeded random) AlexNet on photo patches with noise/JPEG/blur; votes from a
    hidden weighting of layers 3-5; fitted weights generalise to held-out source images."""
    rng = np.random.default_rng(0)
    refs, groups = _patches(rng, 800)
    p0 = np.stack([_distort(r, rng) for r in refs])
    p1 = np.stack([_distort(r, rng) for r in refs])
    net = load_dpl("random")
    f0, f1 = compute_features(net, refs, p0), compute_features(net, refs, p1)
    hidden = np.r_[np.zeros(256), rng.exponential(1.0, 896)] * (rng.random(1152) < 0.5)
    judge = _simulate_votes(f0, f1, hidden, rng)
    train, test = split_by_group(groups, seed=0)
    hidden_score = score_2afc(f0[test] @ hidden, f1[test] @ hidden, judge[test])
    for loss in ("rank", "logistic"):
        w = fit_weights(f0[train], f1[train], judge[train], loss=loss, seed=0).weights
        assert (w >= 0).all()
        fitted = score_2afc(f0[test] @ w, f1[test] @ w, judge[test])
        assert fitted > 0.65 and fitted > hidden_score - 0.03, (loss, fitted, hidden_score)


def test_fit_starts_from_init_and_is_deterministic(synthetic):
    hidden, (f0, f1, g), _ = synthetic
    init = np.full(1152, 0.05, np.float32)
    tiny = fit_weights(f0[:200], f1[:200], g[:200], loss="logistic", epochs=1, lr=1e-7, init=init)
    np.testing.assert_allclose(tiny.weights, init, atol=1e-5)
    a = fit_weights(f0[:500], f1[:500], g[:500], epochs=2, seed=3)
    b = fit_weights(f0[:500], f1[:500], g[:500], epochs=2, seed=3)
    np.testing.assert_array_equal(a.weights, b.weights)
    with pytest.raises(ValueError):
        fit_weights(f0[:10], f1[:10], g[:10], loss="hinge")
    with pytest.raises(ValueError):
        fit_weights(f0[:10], f1[:9], g[:10])


def test_lr_schedule_follows_lpips():
    # LPIPS train.py: nepoch=5 at the base rate, nepoch_decay=5 (rate drops after each).
    rates = [round(_epoch_lr(1.0, e, 10), 6) for e in range(10)]
    assert rates == [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2]
    assert _epoch_lr(1.0, 0, 1) == 1.0
