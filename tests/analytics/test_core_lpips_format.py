"""lpips weight files: exact keys/shapes on write, strict checks on read."""

import numpy as np
import pytest
import torch

from analytics import dpl
from analytics.lpips_format import load_lpips_weights, save_lpips_weights

EXPECTED = {
    "lin0.model.1.weight": (1, 64, 1, 1),
    "lin1.model.1.weight": (1, 192, 1, 1),
    "lin2.model.1.weight": (1, 384, 1, 1),
    "lin3.model.1.weight": (1, 256, 1, 1),
    "lin4.model.1.weight": (1, 256, 1, 1),
}


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


def test_written_file_has_exactly_the_lpips_keys(tmp_path):
    w = np.random.default_rng(0).random(1152).astype(np.float32)
    path = save_lpips_weights(w, tmp_path / "sub" / "w.pth")
    assert path == tmp_path / "sub" / "w.pth" and path.is_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == EXPECTED
    assert all(v.dtype == torch.float32 for v in state.values())
    # layer order: the first 64 numbers are lin0, the last 256 lin4
    np.testing.assert_array_equal(state["lin0.model.1.weight"].reshape(-1).numpy(), w[:64])
    np.testing.assert_array_equal(state["lin4.model.1.weight"].reshape(-1).numpy(), w[-256:])
    np.testing.assert_array_equal(load_lpips_weights(path), w)


def test_save_validates(tmp_path):
    for bad in (np.ones(1000), -np.ones(1152), np.full(1152, np.inf)):
        with pytest.raises(ValueError):
            save_lpips_weights(bad, tmp_path / "x.pth")


def _state(**overrides):
    state = {k: torch.ones(s) for k, s in EXPECTED.items()}
    state.update(overrides)
    return {k: v for k, v in state.items() if v is not None}


@pytest.mark.parametrize(
    "state, message",
    [
        (_state(**{"lin3.model.1.weight": None}), "lin3.model.1.weight"),
        (_state(**{"lin2.model.1.weight": torch.ones(1, 384)}), "shape"),
        (_state(**{"lin1.model.1.weight": torch.ones(1, 64, 1, 1)}), "shape"),
        ({"lin0.weight": torch.ones(1, 64, 1, 1)}, "lin0.model.1.weight"),
    ],
)
def test_load_rejects_missing_or_misshapen_keys(tmp_path, state, message):
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        load_lpips_weights(path)


def test_load_rejects_non_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.ones(1152), path)
    with pytest.raises(ValueError, match="state dict"):
        load_lpips_weights(path)


def test_reads_heads_from_full_checkpoints():
    """Extra keys are fine: the stlpips checkpoint and lpips' own v0.1 file both read."""
    import importlib.util
    from pathlib import Path

    heads = load_lpips_weights(dpl.stlpips_weights_path())
    assert heads.shape == (1152,) and (heads >= 0).all() and heads.max() > 0
    lpips_dir = Path(importlib.util.find_spec("lpips").submodule_search_locations[0])
    published = load_lpips_weights(lpips_dir / "weights" / "v0.1" / "alex.pth")
    assert published.shape == (1152,) and (published >= 0).all()
