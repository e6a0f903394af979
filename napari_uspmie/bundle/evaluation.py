"""LaSSIM evaluation of the inference bundle (``configs/evaluate.json``).

For every enhanced case, LaSSIM(enhanced, input) measures how much structure the enhancement
kept (1 = the Laplacian band is unchanged). 2D images are scored as they are; volumes, which the
network enhances slice by slice, slice by slice (the case's score is the mean over its slices).
The paper's band is level 3 of a 5-level pyramid; slices too small for it (each side needs
``min_size_for_level(level)`` pixels, 49 at level 3) are scored at the finest level that fits,
and the level used is reported.

- :class:`CaseLaSSIMHandler` is ``napari_uspmie.LaSSIMHandler`` fed by :func:`lassim_pairs` (the
  evaluator's key metric: the mean over all 2D images and slices at the configured level);
- :class:`LaSSIMReport` adds ``lassim``/``level``/``heatmap`` columns to the evaluator's case
  table, writes a heatmap PNG per case (the middle slice for volumes; dark = structure changed)
  and a JSON summary (mean, std, min, max over cases).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from napari_uspmie.bundle.transforms import reverse_spatial
from napari_uspmie.io.atomic import staged_output
from napari_uspmie.io.heatmap import heatmap_rgb
from napari_uspmie.metric.handler import LaSSIMHandler
from napari_uspmie.metric.lassim import lassim_map, min_size_for_level
from napari_uspmie.metric.lassim_rule import feasible_level

__all__ = ["case_pair", "lassim_pairs", "CaseLaSSIMHandler", "LaSSIMReport", "save_heatmap"]

logger = logging.getLogger("napari_uspmie.bundle")


def case_pair(item: dict[str, Any], pred_key: str = "pred") -> tuple[torch.Tensor, torch.Tensor]:
    """``(enhanced, input)`` of one decollated case as float64 ``(N, C, H, W)`` batches of 2D images.

    Uses ``item[pred_key]`` and ``item[pred_key + "_input"]`` (set by ``RestoreFromNetworkd``). ``N`` is
    1 for 2D images and the number of slices for volumes; C is 1 or 3 (alpha dropped).
    """
    pred = reverse_spatial(torch.as_tensor(item[pred_key]).detach().cpu().double())
    source = reverse_spatial(torch.as_tensor(item[f"{pred_key}_input"]).detach().cpu().double())
    colour = 3 if source.shape[0] >= 3 else 1
    pred, source = pred[:colour], source[:colour]
    if source.ndim == 4:  # (C, D, H, W) -> slices as the batch
        return pred.permute(1, 0, 2, 3).contiguous(), source.permute(1, 0, 2, 3).contiguous()
    return pred[None], source[None]


def lassim_pairs(output: Any, level: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``output_transform`` for ``LaSSIMHandler``: lists of ``(C, H, W)`` enhanced and input images.

    Every 2D image and every slice of a volume is one item; items too small for ``level`` are left out.
    """
    items = output if isinstance(output, list) else [output]
    preds, refs = [], []
    for item in items:
        if not isinstance(item, dict) or "pred" not in item:
            continue
        pred, ref = case_pair(item)
        if min(pred.shape[-2:]) >= min_size_for_level(level):
            preds += list(pred)
            refs += list(ref)
    return preds, refs


class CaseLaSSIMHandler(LaSSIMHandler):
    """``LaSSIMHandler`` over every 2D image and slice of the enhanced cases (see :func:`lassim_pairs`).

    An iteration whose images are all too small for ``level`` adds nothing (instead of failing).

    Args:
        level, max_level, dtype, reduction, save_details: as for ``LaSSIMHandler``.
    """

    def __init__(self, level: int = 3, max_level: int = 5, **kwargs: Any) -> None:
        kwargs.setdefault("output_transform", functools.partial(lassim_pairs, level=level))
        super().__init__(level=level, max_level=max_level, **kwargs)

    def iteration_completed(self, engine: Engine) -> None:
        preds, refs = self._output_transform(engine.state.output)
        if preds:
            self.update((preds, refs))


def save_heatmap(score_map: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a LaSSIM map (1 = unchanged) as a colour PNG in the package's one heatmap colour map."""
    from PIL import Image

    path = Path(path)
    with staged_output(path, overwrite=True) as tmp:  # the report folder's own file, rewritten per run
        Image.fromarray(heatmap_rgb(score_map)).save(tmp, format="PNG")
    return path


class LaSSIMReport:
    """Ignite handler: per-case LaSSIM, heatmap PNGs and a summary.

    Args:
        output_dir: where ``<case>_lassim.png`` and ``lassim_summary.json`` go.
        level: Laplacian band (paper: 3); lowered per case when slices are too small.
        max_level: pyramid depth (paper: 5).
    """

    def __init__(self, output_dir: str | os.PathLike, level: int = 3, max_level: int = 5) -> None:
        self.output_dir, self.level, self.max_level = Path(output_dir), int(level), int(max_level)
        self.scores: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine: Engine) -> None:
        items = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        cases = getattr(engine, "cases", None)
        for item in items:
            record = cases[-1] if cases else {}
            pred, ref = case_pair(item)
            level = feasible_level(tuple(pred.shape[-2:]), self.level)
            if min(pred.shape[-2:]) < min_size_for_level(level):
                record.update(lassim="", level="", heatmap="image too small for LaSSIM")
                continue
            score_map, scores = lassim_map(pred, ref, level, self.max_level, return_score=True)
            score = float(scores.mean())
            name = Path(str(record.get("case", f"case{len(self.scores)}"))).name.split(".")[0]
            middle = score_map[score_map.shape[0] // 2, 0].numpy()
            heatmap = save_heatmap(middle, self.output_dir / f"{name}_lassim.png")
            self.scores.append(score)
            record.update(lassim=score, level=level, heatmap=str(heatmap))
            logger.info("%s: LaSSIM %.4f (level %d)", record.get("case", name), score, level)

    def summary(self) -> dict[str, float]:
        s = np.asarray(self.scores, dtype=np.float64)
        if not s.size:
            return {"n": 0}
        return {
            "n": int(s.size),
            "mean": float(s.mean()),
            "std": float(s.std()),
            "min": float(s.min()),
            "max": float(s.max()),
        }

    def completed(self, engine: Engine) -> None:
        summary = self.summary()
        metrics = {k: float(v) for k, v in getattr(engine.state, "metrics", {}).items() if np.isscalar(v)}
        summary["key_metric"] = metrics
        with staged_output(self.output_dir / "lassim_summary.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        if summary["n"]:
            line = (
                f"LaSSIM over {summary['n']} case(s): mean {summary['mean']:.4f}, std {summary['std']:.4f}, "
                f"min {summary['min']:.4f}, max {summary['max']:.4f}"
            )
            if metrics:
                line += "; over all images and slices: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(line)
