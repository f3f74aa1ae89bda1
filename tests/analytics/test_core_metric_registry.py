"""The metric registry: every metric orders distortions, and no network runs without its weights."""

import numpy as np
import pytest
import torch
import torchvision
from skimage import data as skdata

from analytics import dpl, lpips_format
from analytics.metrics import (
    METRICS,
    REGISTRY,
    MetricUnavailable,
    dpl_metric,
    lpips_trunk_checkpoint,
    msssim_distance,
    msssim_window,
)


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


TRUNKS = {
    "alex": (torchvision.models.alexnet, "alexnet-owt-7be5be79.pth"),
    "vgg": (torchvision.models.vgg16, "vgg16-397923af.pth"),
    "squeeze": (torchvision.models.squeezenet1_1, "squeezenet1_1-b8a52dc0.pth"),
}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"attempted download of {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path


def write_random_trunk(net: str) -> None:
    """A torchvision-format checkpoint for ``net`` where the ImageNet file would be: the
    convolutional features seeded at random (He init), the classifier, which lpips never
    uses, as broadcast zeros so the file stays small (vgg16's would be 528 MB)."""
    builder, _ = TRUNKS[net]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in builder(weights=None).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features.") and key.endswith("weight"):
            state[key] = torch.randn(shape, generator=gen) * (2 / np.prod(shape[1:])) ** 0.5
        else:
            state[key] = torch.zeros(1).expand(shape)
    path = lpips_trunk_checkpoint(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def patches(size=64):
    img = skdata.astronaut()
    return np.stack(
        [img[y : y + size, x : x + size] for y, x in [(40, 200), (300, 120), (180, 330)]]
    )


def noisy(p, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(p + rng.normal(0, sigma, p.shape), 0, 255).astype(np.uint8)


def test_trunk_file_names_are_torchvisions(torch_home):
    for net, (_, name) in TRUNKS.items():
        assert lpips_trunk_checkpoint(net) == torch_home / "hub" / "checkpoints" / name


@pytest.mark.parametrize("net", list(TRUNKS))
def test_a_missing_trunk_is_unavailable_and_names_its_file(torch_home, net):
    metric = REGISTRY[f"lpips-{net}"]
    expected = str(torch_home / "hub" / "checkpoints" / TRUNKS[net][1])
    assert expected in metric.unavailable()
    with pytest.raises(dpl.BackboneUnavailable, match=TRUNKS[net][1]):
        metric.distance(patches(), noisy(patches(), 10))


def test_every_metric_ranks_a_mild_distortion_below_a_strong_one(torch_home):
    for net in TRUNKS:
        write_random_trunk(net)
    ref = patches(48)
    mild, strong = noisy(ref, 4), noisy(ref, 40, seed=1)
    for name, metric in REGISTRY.items():
        assert metric.unavailable() is None, name
        d_mild, d_strong = metric.distance(ref, mild), metric.distance(ref, strong)
        assert d_mild.shape == d_strong.shape == (3,) and d_mild.dtype == np.float64, name
        assert (d_mild < d_strong).all(), (name, d_mild, d_strong)
        assert METRICS[name] is metric.distance


def test_msssim_window_fits_the_patch_size():
    assert [msssim_window(s) for s in (33, 64, 65, 97, 129, 160, 161, 512)] == [
        3, 3, 5, 7, 9, 9, 11, 11,
    ]  # fmt: skip
    for side in (33, 64, 100, 161):  # pytorch-msssim's own check passes at every size
        img = patches(side)
        assert msssim_distance(img, img) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(MetricUnavailable, match="32 pixels"):
        msssim_distance(patches(32), patches(32))
    assert isinstance(MetricUnavailable("x"), dpl.BackboneUnavailable)


def test_fitted_dpl_metric_reads_its_weights_file(tmp_path):
    ref = patches()
    weights = np.random.default_rng(0).random(dpl.N_FEATURES).astype(np.float32)
    path = lpips_format.save_lpips_weights(weights, tmp_path / "fit.pth")
    metric = dpl_metric(path, "random")
    assert metric.unavailable() is None
    got = metric.distance(ref, noisy(ref, 15))
    net = dpl.load_dpl("random")
    net.set_weights(weights)
    with torch.no_grad():
        expected = net(dpl.to_tensor(ref), dpl.to_tensor(noisy(ref, 15))).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert (metric.distance(ref, noisy(ref, 4)) < metric.distance(ref, noisy(ref, 40))).all()

    missing = dpl_metric(tmp_path / "gone.pth", "stlpips-alex")
    assert "gone.pth" in missing.unavailable()
    with pytest.raises(dpl.BackboneUnavailable, match="gone.pth"):
        missing.distance(ref, ref)
