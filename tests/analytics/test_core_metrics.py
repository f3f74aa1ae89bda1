"""Baseline distances: PSNR, SSIM (scikit-image) and LPIPS (lpips package, offline-safe)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

from analytics.dpl import BackboneUnavailable, load_dpl, to_tensor
from analytics.metrics import (
    METRICS,
    lpips_distance,
    lpips_trunk_checkpoint,
    psnr_distance,
    ssim_distance,
)


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


def patches():
    img = skdata.coffee()
    return np.stack([img[y : y + 64, x : x + 64] for y, x in [(50, 50), (150, 300), (250, 400)]])


def noisy(p, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(p + rng.normal(0, sigma, p.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("metric", [psnr_distance, ssim_distance])
def test_distances_rise_with_noise(metric):
    ref = patches()
    ds = [metric(ref, noisy(ref, s)) for s in (2, 8, 20, 50)]
    for d in ds:
        assert d.shape == (3,)
    for a, b in zip(ds, ds[1:], strict=False):
        assert (a < b).all()


def test_psnr_value_and_identity():
    ref = np.zeros((1, 8, 8, 3), np.uint8)
    dist = np.full((1, 8, 8, 3), 10, np.uint8)
    assert psnr_distance(ref, dist)[0] == pytest.approx(-10 * np.log10(255**2 / 100))
    assert psnr_distance(ref, ref)[0] == -np.inf  # the smallest distance; orders correctly


def test_ssim_identity_is_zero():
    ref = patches()
    np.testing.assert_allclose(ssim_distance(ref, ref), 0.0, atol=1e-12)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        psnr_distance(patches(), patches()[:, :32])


def test_metrics_registry():
    assert set(METRICS) == {
        "psnr", "ssim", "ms-ssim", "lpips-alex", "lpips-vgg", "lpips-squeeze", "stlpips-alex"
    }  # fmt: skip
    assert METRICS["psnr"] is psnr_distance and METRICS["lpips-alex"].func is lpips_distance


def _point_torch_home(monkeypatch, path):
    monkeypatch.setenv("TORCH_HOME", str(path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)


def _no_downloads(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"attempted download of {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_lpips_offline_raises_naming_the_file(tmp_path, monkeypatch):
    _point_torch_home(monkeypatch, tmp_path)
    _no_downloads(monkeypatch)
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert lpips_trunk_checkpoint("alex") == expected
    with pytest.raises(BackboneUnavailable) as info:
        lpips_distance(patches(), noisy(patches(), 10))
    assert str(expected) in str(info.value)


def test_lpips_uses_the_local_trunk_file_and_matches_dpl(tmp_path, monkeypatch):
    """With a torchvision-format file in place (random values: the ImageNet file is not on
    this machine) lpips builds without downloading, and equals our 'alex' DPL carrying the
    lpips package's published v0.1 heads."""
    import torchvision

    _point_torch_home(monkeypatch, tmp_path)
    _no_downloads(monkeypatch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        state = torchvision.models.alexnet(weights=None).state_dict()
    ckpt = lpips_trunk_checkpoint("alex")
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)

    ref = patches()
    dist = noisy(ref, 15)
    got = lpips_distance(ref, dist)
    assert got.shape == (3,) and (got > 0).all()

    heads = (
        Path(importlib.util.find_spec("lpips").submodule_search_locations[0])
        / "weights"
        / "v0.1"
        / "alex.pth"
    )
    ours = load_dpl("alex", weights=heads)
    with torch.no_grad():
        expected = ours(to_tensor(ref), to_tensor(dist)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
