"""Against the offline trained network's own heads: lpips.LPIPS reading the stlpips checkpoint
(its lin heads) on the shift-tolerant trunk gives our stlpips-alex distances to 1e-5, on
random tensors and on real photo patches; and so does φ from the feature cache."""

import warnings

import numpy as np
import pytest
import torch
from skimage import data as skdata

from analytics import dpl
from analytics.feature_cache import compute_stimulus_features
from analytics.lpips_format import load_lpips_weights


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


@pytest.fixture(scope="module")
def pair():
    import lpips

    ours = dpl.load_dpl("stlpips-alex")
    path = str(dpl.stlpips_weights_path())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        theirs = lpips.LPIPS(
            net="alex", pretrained=True, pnet_rand=True, model_path=path, verbose=False
        )
    heads = torch.cat([getattr(theirs, f"lin{i}").model[1].weight.reshape(-1) for i in range(5)])
    # lpips took the checkpoint's own heads (its trunk keys do not fit lpips' torchvision
    # AlexNet and are skipped); the trunk is the checkpoint's, through our module.
    np.testing.assert_array_equal(heads.detach().numpy(), load_lpips_weights(path))
    theirs.net = ours.net
    return theirs.eval(), ours


def patches(size=64):
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(skdata, name)()
        out += [img[40 : 40 + size, 60 : 60 + size], img[150 : 150 + size, 200 : 200 + size]]
    return np.stack(out)


def test_equal_on_random_tensors(pair):
    theirs, ours = pair
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(5, 3, 64, 64, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), theirs(x, y).reshape(-1), atol=1e-5, rtol=1e-5)


def test_equal_on_photo_patches_and_from_cached_features(pair):
    theirs, ours = pair
    ref = patches()
    rng = np.random.default_rng(0)
    noisy = np.clip(ref + rng.normal(0, 10, ref.shape), 0, 255).astype(np.uint8)
    with torch.no_grad():
        expected = theirs(dpl.to_tensor(ref), dpl.to_tensor(noisy)).reshape(-1)
        torch.testing.assert_close(
            ours(dpl.to_tensor(ref), dpl.to_tensor(noisy)), expected, atol=1e-5, rtol=1e-5
        )
    phi = compute_stimulus_features(ours, ref, noisy, np.arange(len(ref)))
    np.testing.assert_allclose(phi @ ours.weights(), expected.numpy(), atol=1e-5, rtol=1e-5)
