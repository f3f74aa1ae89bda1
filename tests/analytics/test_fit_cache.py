"""The on-disk φ cache: computed once per stimulus, recomputed only for what is new or changed."""

import numpy as np
import pytest
from skimage import data as skdata

from analytics.dpl import load_dpl, to_tensor
from analytics.feature_cache import (
    FeatureCache,
    compute_stimulus_features,
    features_for,
    stimulus_key,
    trunk_identity,
)


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


@pytest.fixture(scope="module")
def net():
    return load_dpl("random", seed=3)


def study_like(n_refs=3, per_ref=3, size=64, seed=0):
    """References from photos, each with ``per_ref`` noisy versions."""
    rng = np.random.default_rng(seed)
    refs = []
    for name in ("astronaut", "chelsea", "coffee", "rocket")[:n_refs]:
        img = getattr(skdata, name)()
        refs.append(img[100 : 100 + size, 120 : 120 + size])
    refs = np.stack(refs)
    ref_of = np.repeat(np.arange(n_refs), per_ref)
    noise = (
        rng.normal(0, 1, (len(ref_of), size, size, 3))
        * np.tile([4, 12, 30], n_refs)[:, None, None, None]
    )
    stimuli = np.clip(refs[ref_of] + noise, 0, 255).astype(np.uint8)
    keys = [
        stimulus_key(i, refs[r], s) for i, (r, s) in enumerate(zip(ref_of, stimuli, strict=True))
    ]
    return refs, stimuli, ref_of, keys


def test_features_equal_the_model_per_pair(net):
    refs, stimuli, ref_of, _ = study_like()
    # a batch size that splits references across batches
    phi = compute_stimulus_features(net, refs, stimuli, ref_of, batch_size=4)
    expected = net.features_diff(to_tensor(refs[ref_of]), to_tensor(stimuli)).numpy()
    np.testing.assert_allclose(phi, expected, rtol=1e-5, atol=1e-6)


def test_second_fit_computes_nothing_and_a_new_stimulus_exactly_one(net, tmp_path):
    refs, stimuli, ref_of, keys = study_like()
    cache = FeatureCache(tmp_path, trunk_identity(net))
    calls = []
    first = features_for(
        net, cache, keys, refs, stimuli, ref_of, progress=lambda d, t: calls.append((d, t))
    )
    assert first.computed == len(keys) == 9 and calls[-1] == (9, 9)

    again = features_for(
        net, FeatureCache(tmp_path, trunk_identity(net)), keys, refs, stimuli, ref_of
    )
    assert again.computed == 0
    np.testing.assert_array_equal(again.phi, first.phi)

    # one new stimulus (new id) and one re-generated stimulus (same id, new pixels)
    extra = np.clip(refs[1].astype(int) + 20, 0, 255).astype(np.uint8)
    regenerated = 255 - stimuli[0]
    stimuli2 = np.concatenate([stimuli, extra[None]])
    stimuli2[0] = regenerated
    ref_of2 = np.append(ref_of, 1)
    keys2 = [
        stimulus_key(i, refs[r], s) for i, (r, s) in enumerate(zip(ref_of2, stimuli2, strict=True))
    ]
    assert keys2[1:9] == keys[1:9] and keys2[0] != keys[0]
    third = features_for(net, cache, keys2, refs, stimuli2, ref_of2)
    assert third.computed == 2
    np.testing.assert_array_equal(third.phi[1:9], first.phi[1:9])
    fresh = compute_stimulus_features(net, refs, stimuli2[[0, 9]], ref_of2[[0, 9]])
    np.testing.assert_allclose(third.phi[[0, 9]], fresh, rtol=1e-5, atol=1e-7)
    assert features_for(net, cache, keys2, refs, stimuli2, ref_of2).computed == 0


def test_trunks_do_not_share_a_cache(net):
    assert trunk_identity(net) == trunk_identity(load_dpl("random", seed=3))
    assert trunk_identity(net) != trunk_identity(load_dpl("random", seed=4))
    other = load_dpl("random", seed=3)
    other.set_weights(np.zeros(1152))  # the heads do not change φ, so the key stays
    assert trunk_identity(other) == trunk_identity(net)
    assert trunk_identity(load_dpl("stlpips-alex")).startswith("stlpips-alex-")


def test_a_broken_shard_is_recomputed_not_trusted(net, tmp_path):
    refs, stimuli, ref_of, keys = study_like(n_refs=1)
    cache = FeatureCache(tmp_path, "ns")
    features_for(net, cache, keys, refs, stimuli, ref_of)
    (shard,) = cache.folder.glob("*.npz")
    shard.write_bytes(shard.read_bytes()[:100])
    assert features_for(net, cache, keys, refs, stimuli, ref_of).computed == 3
    assert not list(cache.folder.glob(".*"))  # no temporary files left behind
    with pytest.raises(ValueError):
        FeatureCache(tmp_path, "../escape")
