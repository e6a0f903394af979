"""LaMEGAN training through the bundle command line: a full run, resume, offline VGG weights,
renamed settings and explained stops.

The command-line tests run the real ``python -m monai.bundle run`` on a tiny grayscale
configuration (ngf 8, 2 residual blocks, 64x64) with a few real images per domain.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from napari_uspmie.models.networks import ResnetGenerator
from napari_uspmie.models.vgg_weights import VGGWeightsUnavailableError
from tests.io_factories import file_hashes
from tests.unpaired_data import (
    ANATOMICAL,
    CONFIGS,
    REPO,
    TINY_GENERATOR,
    offline_env,
    run_train_bundle,
    tensorboard_tags,
    write_fake_vgg19,
    write_unpaired_dataset,
)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Two epochs through the CLI, from the repository root, with the paper's VGG19 loss."""
    tmp = tmp_path_factory.mktemp("bundle")
    dataset = write_unpaired_dataset(tmp / "data")  # A: 3 PNG + 2 NIfTI slices, B: 3 PNG + 1 DICOM
    weights = write_fake_vgg19(tmp / "vgg19.pth")
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp),
        "--dataset_dir", str(dataset), "--ckpt_dir", str(tmp / "ckpt"), "--output_dir", str(tmp / "out"),
        "--n_epochs", "1", "--n_epochs_decay", "1", "--perceptual_loss", "vgg19", "--vgg_weights", str(weights),
        "--pool_size", "20",
    )  # fmt: skip
    return tmp, result


def test_cli_trains_two_epochs_and_writes_everything(first_run):
    tmp, result = first_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt_dir = tmp / "ckpt"
    assert {"checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt", "model.pt", "model_config.json"} <= {
        p.name for p in ckpt_dir.iterdir()
    }
    ckpt = torch.load(ckpt_dir / "checkpoint_epoch=2.pt", weights_only=True)
    assert set(ckpt) == {
        "generator_ab", "generator_ba", "discriminator_a", "discriminator_b", "optimizer_g", "optimizer_d",
        "lr_scheduler_g", "lr_scheduler_d", "trainer", "network_def_kwargs", "image_pool_a", "image_pool_b",
        "generator_average",
    }  # fmt: skip
    assert ckpt["generator_average"] == {"updates": 0}  # the paper's training: no average, the trained generator out
    assert len(ckpt["image_pool_a"]["images"]) == len(ckpt["image_pool_b"]["images"]) == 2 * 5  # every fake so far
    assert ckpt["trainer"]["iteration"] == 2 * 5 and ckpt["network_def_kwargs"] == {
        **TINY_GENERATOR,
        "upsample": "transpose",
        "residual": False,
    }  # 2 epochs x 5 A items
    kwargs = json.loads((ckpt_dir / "model_config.json").read_text())
    generator = ResnetGenerator(**kwargs)
    generator.load_state_dict(torch.load(ckpt_dir / "model.pt", weights_only=True))
    assert all(torch.equal(v, ckpt["generator_ab"][k]) for k, v in generator.state_dict().items())
    samples = sorted(p.name for p in (tmp / "out" / "samples").glob("epoch_0002_*.png"))
    assert len(samples) == 2
    tags = tensorboard_tags(tmp / "out")
    assert {"loss_G", "loss_G_A", "loss_cycle_B", "loss_perceptual_A", "loss_D_A", "loss_D_B", "lr_G"} <= tags
    assert "val_lassim" in tags


def test_cli_resumes_from_another_cwd_with_a_copied_bundle(first_run):
    tmp, first = first_run
    assert first.returncode == 0
    bundle = tmp / "copied_bundle"
    shutil.copytree(CONFIGS, bundle / "configs", dirs_exist_ok=True)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    result = run_train_bundle(
        str(bundle / "configs" / "train.json"), elsewhere, offline_env(tmp),
        "--dataset_dir", str(tmp / "data"), "--ckpt_dir", str(tmp / "ckpt"), "--resume", "True",
        "--n_epochs", "2", "--n_epochs_decay", "1", "--perceptual_loss", "lassim", "--pool_size", "20",
        "--generator_average", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    epochs = set(re.findall(r"Epoch: (\d+)/3", result.stdout + result.stderr))
    assert epochs == {"3"}  # continued the epoch count instead of starting again
    ckpt = torch.load(tmp / "ckpt" / "checkpoint_epoch=3.pt", weights_only=True)
    iterations = ckpt["trainer"]["iteration"]
    assert iterations == 3 * 5  # 3 epochs x 5 domain-A items
    adam_steps = {int(s["step"]) for s in ckpt["optimizer_g"]["state"].values()}
    assert adam_steps == {iterations}  # optimizer state continued too
    assert len(ckpt["image_pool_b"]["images"]) == 3 * 5  # the pools were restored, not restarted empty
    # averaging switched on at the resume ran for the resumed run's 5 iterations; the export is the
    # average, not the last iteration's generator
    assert ckpt["generator_average"]["updates"] == 5
    exported = torch.load(tmp / "ckpt" / "model.pt", weights_only=True)
    average, trained = ckpt["generator_average"]["average"], ckpt["generator_ab"]
    assert all(torch.equal(exported[k], average[k]) for k in trained)
    assert any(not torch.equal(exported[k], trained[k]) for k in trained)
    # logs and samples went to the run folder of the working directory, never into the bundle.
    assert list((elsewhere / "runs" / "train" / "logs" / "samples").glob("epoch_0003_*.png"))
    assert not (bundle / "runs").exists() and not (bundle / "models").exists()


def test_bundle_stops_before_training_without_vgg_weights_offline(tmp_path, monkeypatch, capsys, config_workflow):
    # The bundle workflow in this process (what `monai.bundle run` drives), saving a CLI start-up.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv("NAPARI_USPMIE_VGG19_URL", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth")  # offline
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    workflow = config_workflow(
        CONFIGS / "train.json",
        run_dir=str(tmp_path / "run"),
        dataset_dir=str(dataset),
        num_workers=0,
    )
    with pytest.raises(RuntimeError) as err:
        workflow.run()
    cause = err.value.__cause__
    while cause is not None and not isinstance(cause, VGGWeightsUnavailableError):
        cause = cause.__cause__
    assert isinstance(cause, VGGWeightsUnavailableError)
    for text in (str(cause), capsys.readouterr().out):  # the bundle's logging.conf logs to stdout
        assert "--vgg_weights" in text and "torch hub cache" in text and "internet" in text
    assert not (tmp_path / "run" / "models").exists()  # stopped before any training or checkpoint


def test_training_refuses_to_write_into_the_shipped_bundle(tmp_path):
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    shipped = REPO / "monai_bundle" / "models"
    before = file_hashes(shipped)
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(dataset), "--ckpt_dir", str(shipped), "--perceptual_loss", "lassim",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "shipped bundle's models folder; training never writes there" in output
    assert file_hashes(shipped) == before


def test_cli_takes_a_renamed_setting_with_a_warning(tmp_path):
    # The old id's value reaches the size check that runs before any data is read: level 4 needs
    # images of at least 97 pixels, the tiny configuration has 64.
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(tmp_path / "unused"), "--run_dir", str(tmp_path / "run"), "--perceptual_loss", "lassim",
        "--pyramid_level", "4",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    warning = "bundle setting 'pyramid_level' is deprecated and will be removed in the next release; use '--level'"
    assert warning in result.stderr, output[-3000:]  # the FutureWarning (MONAI's command line prints the text only)
    assert "load_size [64, 64] is too small for LaSSIM at level 4" in output


# ----------------------------------------------------------------------------- explained stops


def _explained_stop(case: str, tmp_path: Path) -> tuple[list[str], str]:
    """CLI arguments that make training stop on the explained error ``case``, and a piece of its message."""
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    lassim = ["--dataset_dir", str(dataset), "--perceptual_loss", "lassim"]
    if case == "nan_loss":  # 1e39 overflows float32: loss_cycle is inf at the first iteration
        return [*lassim, "--lambda_cycle", "1e39"], "training stopped: loss_G is inf at epoch 1, iteration 1"
    if case == "missing_dataset":
        missing = tmp_path / "no_such_folder"
        return ["--dataset_dir", str(missing), "--perceptual_loss", "lassim"], f"dataset_dir {missing} does not exist"
    assert case == "no_vgg_weights"  # offline (see offline_env), nothing in the hub cache
    return ["--dataset_dir", str(dataset), "--perceptual_loss", "vgg19"], "--vgg_weights /path/to/vgg19-dcbb9e9d.pth"


@pytest.mark.parametrize("case", ["nan_loss", "missing_dataset", "no_vgg_weights"])
def test_cli_stops_on_an_explained_error_with_its_message_alone(tmp_path, case):
    args, expected = _explained_stop(case, tmp_path)
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--ckpt_dir", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out"),
        "--n_epochs", "1", "--n_epochs_decay", "0", *args,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert output.count(expected) == 1, output[-3000:]  # not repeated by ignite or MONAI's StatsHandler
    lines = result.stdout.splitlines()  # the bundle's logging.conf logs to stdout
    errors = [i for i, line in enumerate(lines) if " - ERROR - " in line]
    assert len(errors) == 1, output[-3000:]
    tail = "\n".join(lines[errors[0] :])
    assert expected in tail and " - INFO - " not in tail  # the run ends on the message (and its continuation lines)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_cli_skips_a_corrupt_volume_by_name_and_trains(tmp_path, workers):
    """A ``.nii.gz`` whose header and gzip trailer are intact but whose stream is damaged."""
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    cut = dataset / "A" / "cut.nii.gz"
    packed = bytearray(gzip.compress(ANATOMICAL.read_bytes()))
    middle = len(packed) // 2
    packed[middle : middle + 64] = bytes(b ^ 0xFF for b in packed[middle : middle + 64])
    cut.write_bytes(bytes(packed))
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(dataset), "--run_dir", str(tmp_path / "run"), "--perceptual_loss", "lassim",
        "--n_epochs", "1", "--n_epochs_decay", "0", "--num_workers", workers,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count(f"domain A: skipping unreadable file {cut}") == 1, output[-3000:]
    assert "truncated or corrupt compressed data" in output and "Traceback" not in output
    assert "domain A (low-quality): 2 training images" in output  # 1 PNG + 1 NIfTI slice, not the damaged file
    assert list((tmp_path / "run").rglob("*.pt")), "training did not finish and save"


def test_cli_keeps_the_traceback_of_an_unexpected_error(tmp_path):
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(dataset), "--ckpt_dir", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out"),
        "--perceptual_loss", "lassim", "--train#inferer", "$lambda x, net: 1 / 0",  # a bug inside the iteration
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
