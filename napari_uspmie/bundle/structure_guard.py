"""The structure guard as a bundle post-processing step, before anything is written.

:class:`StructureGuardd` runs :func:`napari_uspmie.metric.structure_check.check_structure` on
each restored prediction against its input (slice by slice for volumes), stores the verdict
under ``"structure"`` (read by the evaluator's case table) and applies the run's
``on_structure_loss`` policy: ``"warn"`` keeps the prediction, ``"keep-input"`` replaces it with
the input, ``"fail"`` raises so that the case is reported failed and nothing is written.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from napari_uspmie.bundle.evaluation import case_pair
from napari_uspmie.inference.checked import StructureLossError, check_policy
from napari_uspmie.metric.structure_check import StructureThresholds, check_structure

__all__ = ["StructureGuardd"]


class StructureGuardd(MapTransform):
    """Check each prediction's structure against its input and apply the policy.

    Args:
        keys: prediction keys (restored by ``RestoreFromNetworkd``, which adds ``<key>_input``).
        on_structure_loss: one of ``"warn"``, ``"keep-input"``, ``"fail"``.
        thresholds: the model's thresholds (default: the guard's).

    Raises:
        ValueError: unknown policy.
        StructureLossError: structure lost under ``"fail"`` (when called).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        on_structure_loss: str = "warn",
        thresholds: StructureThresholds | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.policy = check_policy(on_structure_loss)
        self.thresholds = thresholds or StructureThresholds()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred, source = case_pair(d, key)
            verdict = check_structure(source.numpy(), pred.numpy(), self.thresholds)
            d["structure"] = verdict.as_dict()
            d["structure_summary"] = verdict.summary()
            if verdict.kept:
                continue
            name = d[key].meta.get("filename_or_obj", key) if isinstance(d[key], MetaTensor) else key
            if self.policy == "fail":
                raise StructureLossError(
                    f"{name}: {verdict.summary()}; nothing written (on_structure_loss fail).", None
                )
            if self.policy == "keep-input":
                original = torch.as_tensor(d[f"{key}_input"]).to(d[key].dtype)
                d[key] = MetaTensor(original, meta=dict(d[key].meta)) if isinstance(d[key], MetaTensor) else original
                d["structure_summary"] += " (output is the input)"
        return d
