from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data


@pytest.fixture(scope="session")
def retina() -> np.ndarray:
    """scikit-image's fundus photograph (1411x1411 RGB, uint8), shipped with the package."""
    return data.retina()


@pytest.fixture(scope="session")
def retina_480x272(retina) -> np.ndarray:
    return cv2.resize(retina, (480, 272), interpolation=cv2.INTER_AREA)


@pytest.fixture
def notifications():
    """Napari notifications shown during the test (napari is imported only by tests using it)."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)
