"""DPL model: equivalence with the lpips package, the stlpips-alex backbone, loading rules.

Pure PyTorch/numpy tests (no Django, no network). Real photos come from skimage.data.
"""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from analytics import dpl
from analytics.dpl import BACKBONES, DPL, BackboneUnavailable, load_dpl, to_tensor
from analytics.lpips_format import load_lpips_weights, save_lpips_weights

CHANNELS = (64, 192, 384, 256, 256)


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture: these tests store no media and
    must also run without pytest-django (``-p no:django``)."""
    yield


def photo_patches(n_per_photo=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(skdata, name)()
        for _ in range(n_per_photo):
            y = rng.integers(img.shape[0] - size)
            x = rng.integers(img.shape[1] - size)
            out.append(img[y : y + size, x : x + size])
    return np.stack(out)


def gaussian_noise(patches, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(patches + rng.normal(0, sigma, patches.shape), 0, 255).astype(np.uint8)


def jpeg(patches, quality):
    out = []
    for p in patches:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


def lpips_model(**kwargs):
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation
        return lpips.LPIPS(net="alex", verbose=False, **kwargs).eval()


@pytest.fixture(scope="module")
def random_weights():
    return np.random.default_rng(42).uniform(0.0, 1.0, 1152).astype(np.float32)


@pytest.fixture(scope="module")
def lpips_and_ours(tmp_path_factory, random_weights):
    """lpips with a random trunk and OUR exported heads; our 'random' DPL with lpips' trunk."""
    path = save_lpips_weights(random_weights, tmp_path_factory.mktemp("w") / "heads.pth")
    theirs = lpips_model(pretrained=True, pnet_rand=True, model_path=str(path))
    ours = load_dpl("random", weights=path)
    ours.net.load_state_dict(theirs.net.state_dict(), strict=True)
    return theirs, ours


@pytest.fixture(scope="module")
def stlpips():
    return load_dpl("stlpips-alex")


# ---------------------------------------------------------------------- lpips equivalence


def test_lpips_loaded_our_exported_heads(lpips_and_ours, random_weights):
    theirs, _ = lpips_and_ours
    got = torch.cat([getattr(theirs, f"lin{i}").model[1].weight.reshape(-1) for i in range(5)])
    np.testing.assert_array_equal(got.detach().numpy(), random_weights)


def test_distance_equals_lpips_on_random_tensors(lpips_and_ours):
    theirs, ours = lpips_and_ours
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(6, 3, 64, 64, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        expected = theirs(x, y).reshape(-1)
        got = ours(x, y)
    assert got.shape == (6,)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_distance_equals_lpips_on_photo_patches(lpips_and_ours):
    theirs, ours = lpips_and_ours
    ref = photo_patches()
    for dist in (gaussian_noise(ref, 12), jpeg(ref, 15)):
        x, y = to_tensor(ref), to_tensor(dist)
        with torch.no_grad():
            expected = theirs(x, y).reshape(-1)
            got = ours(x, y)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert (got > 0).all()


def test_wrong_key_file_is_silently_ignored_by_lpips_but_rejected_by_us(tmp_path):
    bad = tmp_path / "bad.pth"
    # A typical mistake: the Dropout index left out, so lpips' strict=False skips every key.
    torch.save(
        {f"lin{i}.model.0.weight": torch.ones(1, c, 1, 1) for i, c in enumerate(CHANNELS)}, bad
    )
    theirs = lpips_model(pretrained=True, pnet_rand=True, model_path=str(bad))  # no error...
    assert not torch.all(theirs.lin0.model[1].weight == 1)  # ...and the weights stay random
    with pytest.raises(ValueError, match="lin0.model.1.weight"):
        load_lpips_weights(bad)
    with pytest.raises(ValueError):
        load_dpl("random", weights=bad)


def test_forward_is_phi_dot_w(stlpips):
    ref = photo_patches(1)
    x, y = to_tensor(ref), to_tensor(gaussian_noise(ref, 10))
    with torch.no_grad():
        phi = stlpips.features_diff(x, y)
        d = stlpips(x, y)
    assert phi.shape == (len(ref), 1152)
    assert (phi >= 0).all()
    torch.testing.assert_close(d, phi @ torch.from_numpy(stlpips.weights()))


# ---------------------------------------------------------------------- stlpips-alex


def stlpips_state_dict():
    return torch.load(dpl.stlpips_weights_path(), map_location="cpu", weights_only=True)


def test_stlpips_state_dict_is_used_entirely():
    sd = stlpips_state_dict()
    model = DPL("shift_tolerant")
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert set(model.state_dict()) == set(sd)
    # load_dpl carries every tensor over, lin heads included.
    loaded = load_dpl("stlpips-alex").state_dict()
    for key, value in sd.items():
        torch.testing.assert_close(loaded[key], value, atol=0, rtol=0)
    heads = torch.cat([sd[f"lin{i}.model.1.weight"].reshape(-1) for i in range(5)]).numpy()
    np.testing.assert_array_equal(load_dpl("stlpips-alex").weights(), heads)


def test_stlpips_architecture_blurpool_and_tap_sizes(stlpips):
    binomial = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    filters = [k for k in stlpips.state_dict() if k.endswith(".filt")]
    assert filters == ["net.slice1.1.filt", "net.slice2.4.filt", "net.slice3.8.filt"]
    for k in filters:
        assert torch.equal(
            stlpips.state_dict()[k][:, 0], binomial.expand(len(stlpips.state_dict()[k]), 3, 3)
        )
    assert stlpips.net.slice1[0].stride == (1, 1)  # conv1 at stride 1, then blur-pool /2
    with torch.no_grad():
        taps = stlpips.net(torch.zeros(1, 3, 64, 64))
    assert [t.shape[1] for t in taps] == list(CHANNELS)
    assert [tuple(t.shape[2:]) for t in taps] == [(30, 30), (15, 15), (8, 8), (8, 8), (8, 8)]


def test_stlpips_distance_sanity_on_photos(stlpips):
    ref = photo_patches()
    x = to_tensor(ref)
    with torch.no_grad():
        assert torch.equal(stlpips(x, x), torch.zeros(len(ref)))
        noisy = [
            stlpips(x, to_tensor(gaussian_noise(ref, s))).mean().item() for s in (3, 8, 20, 50)
        ]
        jpegs = [stlpips(x, to_tensor(jpeg(ref, q))).mean().item() for q in (90, 50, 20, 5)]
        y = to_tensor(gaussian_noise(ref, 10))
        torch.testing.assert_close(stlpips(x, y), stlpips(y, x))  # symmetric
    assert all(a < b for a, b in zip(noisy, noisy[1:], strict=False)), noisy
    assert all(a < b for a, b in zip(jpegs, jpegs[1:], strict=False)), jpegs
    assert noisy[0] > 0


def test_stlpips_is_shift_tolerant(stlpips):
    img = skdata.astronaut()
    corners = [(30, 200), (200, 150), (300, 300), (100, 400)]
    ref = np.stack([img[y : y + 64, x : x + 64] for y, x in corners])
    shifted = np.stack([img[y : y + 64, x + 1 : x + 65] for y, x in corners])
    with torch.no_grad():
        d_shift = stlpips(to_tensor(ref), to_tensor(shifted)).mean()
        d_noise = stlpips(to_tensor(ref), to_tensor(gaussian_noise(ref, 8))).mean()
    assert d_shift < d_noise


# ---------------------------------------------------------------------- alex / random / helpers


def _point_torch_home(monkeypatch, path):
    monkeypatch.setenv("TORCH_HOME", str(path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case someone called set_dir


def test_alex_without_local_file_raises_naming_it(tmp_path, monkeypatch):
    _point_torch_home(monkeypatch, tmp_path)
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert dpl.alexnet_checkpoint_path() == expected
    with pytest.raises(BackboneUnavailable, match="alexnet-owt-7be5be79.pth") as info:
        load_dpl("alex")
    assert str(expected) in str(info.value)


def test_alex_reads_local_torchvision_file(tmp_path, monkeypatch):
    """With a torchvision-format file in place (random values here: the real ImageNet file is
    not on this machine) our 'alex' trunk holds exactly torchvision's features."""
    import torchvision

    _point_torch_home(monkeypatch, tmp_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        tv = torchvision.models.alexnet(weights=None).eval()
    ckpt = dpl.alexnet_checkpoint_path()
    ckpt.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), ckpt)
    ours = load_dpl("alex")
    np.testing.assert_array_equal(ours.weights(), np.ones(1152, np.float32))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = x
        taps = ours.net(x)
        for i, layer in enumerate(tv.features[:12]):
            expected = layer(expected)
            if i in (1, 4, 7, 9, 11):
                torch.testing.assert_close(taps[(1, 4, 7, 9, 11).index(i)], expected)


def test_random_backbone_is_seeded():
    a, b, c = load_dpl("random", seed=0), load_dpl("random", seed=0), load_dpl("random", seed=1)
    w = "net.slice1.0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    np.testing.assert_array_equal(a.weights(), np.ones(1152, np.float32))


def test_unknown_backbone():
    assert BACKBONES == ("stlpips-alex", "alex", "random")
    with pytest.raises(ValueError, match="unknown backbone"):
        load_dpl("vgg")


def test_model_is_eval_and_frozen(stlpips):
    assert not stlpips.training
    assert not any(p.requires_grad for p in stlpips.parameters())


def test_set_weights_roundtrip_and_validation():
    model = load_dpl("random")
    w = np.linspace(0, 1, 1152, dtype=np.float32)
    model.set_weights(w)
    np.testing.assert_array_equal(model.weights(), w)
    model.set_weights(torch.from_numpy(w[::-1].copy()))
    np.testing.assert_array_equal(model.weights(), w[::-1])
    for bad in (np.ones(1151), -np.ones(1152), np.full(1152, np.nan)):
        with pytest.raises(ValueError):
            model.set_weights(bad)


def test_to_tensor_lpips_convention():
    img = np.array([[[0, 255, 127]]], dtype=np.uint8)  # 1 x 1 x 3
    t = to_tensor(img)
    assert t.shape == (1, 3, 1, 1) and t.dtype == torch.float32
    torch.testing.assert_close(t.reshape(-1), torch.tensor([-1.0, 1.0, 127 / 127.5 - 1]))
    with pytest.raises(TypeError):
        to_tensor(img.astype(np.float32))


def test_input_checks(stlpips):
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="same shape"):
        stlpips(x, torch.zeros(1, 3, 64, 60))
    with pytest.raises(TypeError):
        stlpips(x.to(torch.uint8), x.to(torch.uint8))
