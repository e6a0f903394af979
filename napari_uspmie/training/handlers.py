"""Ignite handlers of the LaMEGAN bundle: checkpoints, resume, model export, sample triptychs.

Checkpoints use MONAI's ``CheckpointSaver``/``CheckpointLoader``; the wrappers here only
add the engine itself to what is saved and loaded. A config cannot do that directly: the
trainer's handler list would refer back to the trainer (a circular reference).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from napari_uspmie.errors import CheckpointError
from napari_uspmie.io.atomic import staged_output
from napari_uspmie.io.heatmap import heatmap_rgb
from napari_uspmie.training.trainer import unwrap
from napari_uspmie.training.weight_average import GeneratorAverage

__all__ = [
    "CHECKPOINT_PATTERN",
    "ConstantState",
    "TrainingCheckpointSaver",
    "ResumeFromCheckpoint",
    "GeneratorExporter",
    "TriptychSaver",
    "latest_checkpoint",
    "parse_resume",
]

logger = logging.getLogger(__name__)

#: File names written by MONAI's CheckpointSaver for epoch-level interval checkpoints.
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


class ConstantState:
    """Plain data stored in a checkpoint through the ``state_dict`` protocol Ignite expects."""

    def __init__(self, value: Mapping[str, Any]) -> None:
        self.value = dict(value)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.value)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value = dict(state)


def checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint_epoch=N.pt`` files of ``ckpt_dir``, largest ``N`` first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.search(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint_epoch=N.pt`` with the largest ``N`` in ``ckpt_dir``, or ``None``."""
    found = checkpoints(ckpt_dir)
    return found[0] if found else None


def first_readable(paths: list[Path]) -> tuple[Path, set[str]]:
    """The first checkpoint of ``paths`` that loads, with its keys; unreadable ones are skipped with a warning.

    Raises:
        CheckpointError: none of them loads.
    """
    for path in paths:
        try:
            return path, set(torch.load(str(path), map_location="cpu", weights_only=True, mmap=True))
        except Exception as e:  # truncated, corrupt or foreign files: the previous one may still load
            logger.warning("%s: unreadable checkpoint (%s); trying the previous one.", path, type(e).__name__)
    names = ", ".join(p.name for p in paths)
    raise CheckpointError(f"no readable checkpoint to resume from ({names}); start without --resume.")


def parse_resume(resume: Any) -> bool | str:
    """``resume`` as given on a command line: a boolean, or a checkpoint path.

    ``True``/``"true"``/``"yes"``/``"1"`` -> ``True``; ``False``/``None``/``"false"``/... -> ``False``;
    any other string is taken as the path of the checkpoint to continue from.
    """
    if isinstance(resume, bool) or resume is None:
        return bool(resume)
    if isinstance(resume, (int, float)):
        return bool(resume)
    text = str(resume).strip()
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0", "none", "null", ""):
        return False
    return text


def engine_pools(engine: Engine) -> dict[str, Any]:
    """The trainer's fake-image pools by checkpoint key (none for engines without pools)."""
    names = {"image_pool_a": "pool_a", "image_pool_b": "pool_b"}
    return {key: getattr(engine, attr) for key, attr in names.items() if hasattr(engine, attr)}


class TrainingCheckpointSaver:
    """MONAI ``CheckpointSaver`` of ``save_dict`` plus the trainer and its image pools, every ``save_interval`` epochs.

    Files are ``save_dir/checkpoint_epoch=N.pt``; the newest ``n_saved`` are kept, also across
    resumed runs (whose saver did not write the older files), and an older one is deleted only
    after a newer one was written.

    Args:
        save_dir: checkpoint folder.
        save_dict: objects with ``state_dict`` (networks, optimizers, schedulers).
        save_interval: epochs between checkpoints.
        n_saved: checkpoints kept; ``None`` keeps all.
        extra_state: plain data saved alongside (e.g. ``{"network_def_kwargs": {...}}``,
            one key per entry).
        trainer_key: key of the trainer's own state.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        n_saved: int | None = 2,
        extra_state: Mapping[str, Mapping[str, Any]] | None = None,
        trainer_key: str = "trainer",
    ) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        for key, value in (extra_state or {}).items():
            self.save_dict[key] = ConstantState(value)
        self.save_interval = int(save_interval)
        self.n_saved = n_saved
        self.trainer_key = trainer_key

    def attach(self, engine: Engine) -> None:
        from monai.handlers import CheckpointSaver

        CheckpointSaver(
            save_dir=self.save_dir,
            save_dict={**self.save_dict, **engine_pools(engine), self.trainer_key: engine},
            save_interval=self.save_interval,
            n_saved=self.n_saved,
            epoch_level=True,
        ).attach(engine)
        if self.n_saved is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.prune)

    def prune(self, engine: Engine | None = None) -> None:
        """Delete checkpoints beyond the newest ``n_saved`` (earlier runs' included)."""
        for old in checkpoints(self.save_dir)[self.n_saved :]:
            old.unlink(missing_ok=True)


class ResumeFromCheckpoint:
    """Continue training from a checkpoint: epoch count, networks, optimizers, schedulers, image pools.

    Pools are restored when the checkpoint holds them (older checkpoints resume with empty pools), and
    so are objects marked ``optional_in_checkpoint`` (a weight average).

    Args:
        ckpt_dir: folder searched for the newest ``checkpoint_epoch=N.pt``.
        load_dict: objects to restore (the trainer is added under ``trainer_key``).
        resume: ``False`` does nothing; ``True`` loads the newest checkpoint of ``ckpt_dir``;
            a path loads that file (see :func:`parse_resume`).
        trainer_key: key of the trainer's state in the checkpoint.

    With ``resume=True`` an unreadable newest checkpoint (a run killed while writing it) is skipped,
    with a warning, for the newest one that loads.

    Raises:
        CheckpointError: (when attached) resume was asked for but there is no readable checkpoint.
    """

    def __init__(self, ckpt_dir: str, load_dict: Mapping[str, Any], resume: Any = False, trainer_key: str = "trainer"):
        self.ckpt_dir = str(ckpt_dir)
        self.load_dict = dict(load_dict)
        self.resume = parse_resume(resume)
        self.trainer_key = trainer_key

    def candidates(self) -> list[Path]:
        """Checkpoints to try, in order (empty when not resuming)."""
        if self.resume is False:
            return []
        if self.resume is True:
            found = checkpoints(self.ckpt_dir)
            if not found:
                raise CheckpointError(
                    f"resume was requested but {self.ckpt_dir} holds no checkpoint_epoch=N.pt; "
                    "start without --resume, or pass --ckpt_dir of the earlier run."
                )
            return found
        path = Path(self.resume)
        if not path.is_file():
            raise CheckpointError(f"{path}: the checkpoint to resume from does not exist.")
        return [path]

    def attach(self, engine: Engine) -> None:
        from monai.handlers import CheckpointLoader

        candidates = self.candidates()
        if not candidates:
            return
        path, saved_keys = first_readable(candidates)
        if path != candidates[0]:
            logger.warning("resuming from %s, the newest checkpoint that loads", path)
        logger.info("resuming from %s", path)
        pools = {key: pool for key, pool in engine_pools(engine).items() if key in saved_keys}
        # objects added to training after the checkpoint was written (a weight average) start afresh
        load_dict = {
            key: obj
            for key, obj in self.load_dict.items()
            if key in saved_keys or not getattr(obj, "optional_in_checkpoint", False)
        }
        # Load on CPU; load_state_dict then copies to wherever the networks live.
        CheckpointLoader(
            load_path=str(path), load_dict={**load_dict, **pools, self.trainer_key: engine}, map_location="cpu"
        ).attach(engine)


def _atomic_save(write, path: Path) -> None:
    # the run folder's own model, replaced at each export; readers never see a half-written one
    with staged_output(path, overwrite=True) as tmp:
        write(tmp)


class GeneratorExporter:
    """Write the enhancer alone: ``model.pt`` (A->B generator state dict) and ``model_config.json``.

    Inference rebuilds the generator from ``model_config.json`` (its constructor kwargs)
    and loads ``model.pt``. Written every ``interval`` epochs and when training completes,
    each file replaced atomically.

    Args:
        save_dir: output folder (the bundle's ``ckpt_dir``).
        network: the A->B generator (DDP-wrapped or not).
        network_kwargs: its constructor kwargs.
        interval: epochs between exports.
        filename: state-dict file name.
        average: a :class:`~napari_uspmie.training.weight_average.GeneratorAverage` of ``network``:
            attached with this handler (updated every iteration) and what is exported when it averages.
    """

    def __init__(
        self,
        save_dir: str,
        network: torch.nn.Module,
        network_kwargs: Mapping[str, Any],
        interval: int = 1,
        filename: str = "model.pt",
        average: GeneratorAverage | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.network_kwargs = dict(network_kwargs)
        self.interval = max(1, int(interval))
        self.filename = filename
        self.average = average

    def attach(self, engine: Engine) -> None:
        if self.average is not None:
            self.average.attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> Path:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        exported = self.network if self.average is None else self.average.exported
        state = {k: v.detach().cpu() for k, v in unwrap(exported).state_dict().items()}
        model_path = self.save_dir / self.filename
        _atomic_save(lambda p: torch.save(state, p), model_path)
        config = json.dumps(self.network_kwargs, indent=2) + "\n"
        _atomic_save(lambda p: p.write_text(config), self.save_dir / "model_config.json")
        return model_path


def _to_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8."""
    array = image.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().byte().numpy()
    array = np.moveaxis(array, 0, -1)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]


class TriptychSaver:
    """Save ``input | output | LaSSIM heatmap`` PNGs of validation images (attach to the evaluator).

    The heatmap is :func:`napari_uspmie.lassim_map` of the output against the input in the
    package's one heatmap colour map (:mod:`napari_uspmie.io.heatmap`, red: structure changed). Files are
    ``output_dir/epoch_NNNN_<name>.png``.

    Args:
        output_dir: folder for the PNGs.
        level, max_level: LaSSIM pyramid settings.
        max_images: images saved per validation run.
        image_key, pred_key, name_key: keys in the evaluator's batch and output.
    """

    def __init__(
        self,
        output_dir: str,
        level: int = 3,
        max_level: int = 5,
        max_images: int = 4,
        image_key: str = "image",
        pred_key: str = "pred",
        name_key: str = "name",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.level, self.max_level = level, max_level
        self.max_images = max_images
        self.image_key, self.pred_key, self.name_key = image_key, pred_key, name_key
        self._saved = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._saved = 0

    def _items(self, engine: Engine):
        output, batch = engine.state.output, engine.state.batch
        if isinstance(output, dict):  # not decollated: split the batch here
            n = len(output[self.pred_key])
            output = [{k: output[k][i] for k in (self.image_key, self.pred_key)} for i in range(n)]
            names = batch.get(self.name_key, [""] * n) if isinstance(batch, dict) else [""] * n
        else:
            names = [b.get(self.name_key, "") if isinstance(b, dict) else "" for b in batch]
        yield from zip(output, names, strict=False)

    def __call__(self, engine: Engine) -> None:
        from PIL import Image

        from napari_uspmie.metric.lassim import lassim_map

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for item, name in self._items(engine):
            if self._saved >= self.max_images:
                return
            image, pred = item[self.image_key], item[self.pred_key]
            heat = lassim_map(pred[None].float(), image[None].float(), self.level, self.max_level)[0, 0]
            heat_rgb = heatmap_rgb(heat.cpu().numpy())
            panels = [_to_rgb_uint8(image), _to_rgb_uint8(pred), heat_rgb]
            gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
            strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
            stem = re.sub(r"\.(nii\.gz|nii|png|jpe?g|tiff?|bmp|dcm)", "", str(name) or f"item{self._saved}")
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")
            Image.fromarray(strip).save(self.output_dir / f"epoch_{engine.state.epoch:04d}_{stem}.png")
            self._saved += 1
