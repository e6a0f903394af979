"""LaSSIM as a MONAI cumulative metric.

:class:`LaSSIMMetric` follows MONAI's regression metrics (``SSIMMetric``, ``PSNRMetric``):
call it on every batch, then ``aggregate()`` reduces the buffered ``(batch, 1)`` scores.
Its Ignite handler is :class:`napari_uspmie.metric.handler.LaSSIMHandler`.

LaSSIM compares an enhanced image with the image it was computed from (a no-reference
measure of structure preservation), so ``y`` is usually the network *input*, not a label.
"""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction, convert_to_tensor

from napari_uspmie.metric.lassim import lassim

__all__ = ["LaSSIMMetric"]


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept ``torch.float64`` or the string ``"float64"`` (convenient in JSON bundle configs)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as 'float64', got {dtype!r}.")
    return resolved


class LaSSIMMetric(CumulativeIterationMetric):
    """LaSSIM between ``y_pred`` and ``y``, one score per image, accumulated over iterations.

    Inputs are batch-first tensors ``(B, C, H, W)`` / ``(B, C, D, H, W)`` or lists of
    channel-first tensors, with 1 (gray) or 3 (RGB, converted to luma) channels. Each call
    returns and buffers a ``(B, 1)`` tensor; :meth:`aggregate` reduces the buffer.

    Args:
        level: Laplacian band (paper: 3); images need at least ``6 * 2**level + 1`` samples per side.
        max_level: pyramid depth (paper: 5).
        dtype: computation dtype, a torch dtype or its name; ``None`` keeps the inputs' floating
            dtype. ``"float64"`` reproduces the reference pipeline exactly.
        reduction: MONAI reduction over the ``(N, 1)`` buffer: ``"mean"`` (default), ``"sum"``,
            ``"mean_batch"``, ``"sum_batch"``, ``"mean_channel"``, ``"sum_channel"`` or ``"none"``.
        get_not_nans: ``aggregate()`` also returns the count of not-NaN scores.

    Raises:
        ValueError: from ``__call__`` for mismatched shapes, wrong channel counts, NaN/Inf,
            or images too small for ``level``.
    """

    def __init__(
        self,
        level: int = 3,
        max_level: int = 5,
        dtype: torch.dtype | str | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        if not 0 <= level <= max_level:
            raise ValueError(f"level must be in [0, max_level={max_level}], got {level}.")
        self.level = level
        self.max_level = max_level
        self.dtype = _as_dtype(dtype)
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("LaSSIMMetric needs both y_pred and y (the image the prediction was made from).")
        # Plain tensors: MetaTensor bookkeeping is useless for a score and costs time.
        y_pred = convert_to_tensor(y_pred, track_meta=False)
        y = convert_to_tensor(y, track_meta=False)
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred and y must have the same shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
        with torch.no_grad():
            scores = lassim(y_pred, y, level=self.level, max_level=self.max_level, dtype=self.dtype)
        return scores.reshape(-1, 1)

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffered ``(N, 1)`` scores.

        Args:
            reduction: overrides ``self.reduction`` for this call.

        Returns:
            The reduced scores, plus the not-NaN counts when ``get_not_nans``.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the buffered LaSSIM scores must be a tensor; call the metric on some data first.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
