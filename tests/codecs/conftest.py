"""Real photographs bundled with scikit-image (no network needed)."""

import numpy as np
import pytest
from skimage import data

from twoafc_codecs import center_crop


@pytest.fixture(scope="session")
def astronaut512() -> np.ndarray:
    return center_crop(data.astronaut(), 512)


@pytest.fixture(scope="session", params=["astronaut", "chelsea", "coffee"])
def photo(request) -> np.ndarray:
    """Whole photos, including odd and non-square sizes (chelsea is 451x300)."""
    return getattr(data, request.param)()
