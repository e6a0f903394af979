"""Multi-GPU override on CPU: torchrun, two processes, gloo, DistributedDataParallel + DistributedSampler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from napari_uspmie.models.networks import ResnetGenerator
from tests.unpaired_data import CONFIGS, offline_env, tiny_overrides, write_unpaired_dataset


def test_multi_gpu_config_trains_with_two_cpu_processes(tmp_path):
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=2, nifti_slices=1)  # 3 items per domain
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", configs, *tiny_overrides(),
        "--dataset_dir", str(dataset), "--run_dir", str(tmp_path / "run"),
        "--n_epochs", "1", "--n_epochs_decay", "0", "--perceptual_loss", "lassim",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    # Both ranks trained (the gloo process group worked) ...
    assert log.count("CycleGANTrainer - INFO - Engine run finished") == 2
    models = Path(tmp_path / "run" / "models")
    ckpt = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    # ... each on its half of the 3 items (DistributedSampler pads to 2 per rank), ...
    assert ckpt["trainer"]["iteration"] == 2
    # ... rank 0 alone wrote plain (unwrapped) generator weights; each rank saved its validation samples.
    generator = ResnetGenerator(**json.loads((models / "model_config.json").read_text()))
    generator.load_state_dict(torch.load(models / "model.pt", weights_only=True))
    assert len(list((tmp_path / "run" / "logs" / "samples").glob("epoch_0001_*.png"))) == 2
    # Only rank 0 built the TensorBoard handlers: one event file for training, one for validation.
    assert len(list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))) == 2
