from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data

# Enhancers would otherwise start building compiled libraries in the background (minutes of CPU
# each, into the user's cache); tests of the cache switch it on for themselves.
os.environ["NAPARI_USPMIE_COMPILED_CACHE"] = "off"


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


@pytest.fixture
def config_workflow() -> Callable[..., Any]:
    """Factory of MONAI ``ConfigWorkflow`` objects: what ``python -m monai.bundle run`` drives.

    ``config_workflow(config_file, workflow_type="train", initialize=True, **overrides)``:
    ``config_file`` is one config path or a list of them merged in order (later ones override),
    ``overrides`` are the command line's ``--id value`` pairs. The workflow comes back
    initialised (its ``initialize`` expressions have run) unless ``initialize=False``, which
    leaves it parsed only.
    """
    from monai.bundle import ConfigWorkflow

    def build(
        config_file: str | os.PathLike | Sequence[str | os.PathLike],
        workflow_type: str = "train",
        initialize: bool = True,
        **overrides: Any,
    ) -> ConfigWorkflow:
        if isinstance(config_file, (str, os.PathLike)):
            files: str | list[str] = os.fspath(config_file)
        else:
            files = [os.fspath(f) for f in config_file]
        workflow = ConfigWorkflow(config_file=files, workflow_type=workflow_type, **overrides)
        if initialize:
            workflow.initialize()
        return workflow

    return build


@pytest.fixture
def shipped_architecture() -> dict[str, Any]:
    """``ResnetGenerator`` keyword arguments of the shipped model, read from the bundle's
    ``models/model_config.json`` (tests take the architecture from there, never from a copy)."""
    from napari_uspmie.io.packaged_data import bundle_path

    return json.loads((bundle_path() / "models" / "model_config.json").read_text())
