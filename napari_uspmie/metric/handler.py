"""LaSSIM's Ignite handler, for MONAI engines such as a bundle's evaluator::

    "val_lassim": {
        "_target_": "napari_uspmie.metric.handler.LaSSIMHandler",
        "output_transform": "$monai.handlers.from_engine(['pred', 'image'])"
    }

Kept apart from :mod:`napari_uspmie.metric.monai_metric` so that the metric itself needs no Ignite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.utils import MetricReduction

from napari_uspmie.metric.monai_metric import LaSSIMMetric

__all__ = ["LaSSIMHandler"]


class LaSSIMHandler(IgniteMetricHandler):
    """Ignite handler computing LaSSIM over an epoch (mean over all images by default).

    Args:
        level, max_level, dtype, reduction: as for :class:`LaSSIMMetric`.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "image"])``; the default expects the pair.
        save_details: keep every image's score in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        level: int = 3,
        max_level: int = 5,
        dtype: torch.dtype | str | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable[[Any], Any] = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = LaSSIMMetric(level=level, max_level=max_level, dtype=dtype, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
