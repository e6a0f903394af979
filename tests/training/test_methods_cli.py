"""The paper's four methods trained through the real ``python -m monai.bundle run`` command line.

Each run is one epoch of the tiny grayscale configuration; the checks are that the method's own
terms (and only those) reach the console and TensorBoard under their names, and that its weights
are the official code's unless overridden.
"""

from __future__ import annotations

import re

import pytest

from tests.unpaired_data import (
    REPO,
    offline_env,
    run_train_bundle,
    tensorboard_tags,
    write_fake_vgg19,
    write_unpaired_dataset,
)

BASE_TERMS = {"loss_G_A", "loss_G_B", "loss_cycle_A", "loss_cycle_B", "loss_D_A", "loss_D_B"}
METHOD_TERMS = {
    "cyclegan": set(),
    "stillgan": {"loss_idt_A", "loss_idt_B", "loss_illumination_A", "loss_structure_A", "loss_structure_B"},
    "miinet": {"loss_perceptual_A", "loss_perceptual_B"},
    "lamegan": {"loss_perceptual_A", "loss_perceptual_B"},
}
OPTIONAL_TERMS = {"loss_idt_A", "loss_idt_B", "loss_illumination_A", "loss_structure_A", "loss_structure_B"}


@pytest.fixture(scope="module")
def data_and_weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("methods")
    return write_unpaired_dataset(tmp / "data", n_png=1, nifti_slices=1), write_fake_vgg19(tmp / "vgg19.pth")


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("cyclegan", []),
        ("stillgan", []),
        ("miinet", ["--vgg_weights", "WEIGHTS"]),
        ("lamegan", ["--vgg_weights", "WEIGHTS", "--loss_pyramid", "kornia"]),  # the official code's loss pyramid
    ],
)
def test_each_method_trains_through_the_cli_and_logs_its_terms(tmp_path, data_and_weights, method, extra):
    dataset, weights = data_and_weights
    args = [str(weights) if a == "WEIGHTS" else a for a in extra]
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(dataset), "--run_dir", str(tmp_path / "run"), "--method", method,
        "--n_epochs", "1", "--n_epochs_decay", "0", *args,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    logged = set(re.findall(r"\b(loss_\w+): -?[0-9.]+", output))
    expected = BASE_TERMS | METHOD_TERMS[method]
    assert expected <= logged, (method, sorted(logged))
    assert not (OPTIONAL_TERMS - METHOD_TERMS[method]) & logged  # no other method's terms
    assert expected <= tensorboard_tags(tmp_path / "run" / "logs")
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


def test_method_weights_are_overridable(tmp_path, data_and_weights):
    dataset, _ = data_and_weights
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(dataset), "--run_dir", str(tmp_path / "run"), "--method", "stillgan",
        "--lambda_illumination", "0", "--lambda_identity", "0", "--n_epochs", "1", "--n_epochs_decay", "0",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    logged = set(re.findall(r"\b(loss_\w+): -?[0-9.]+", output))
    assert {"loss_structure_A", "loss_structure_B"} <= logged
    assert not {"loss_illumination_A", "loss_idt_A"} & logged


def test_unknown_method_is_one_line(tmp_path, data_and_weights):
    dataset, _ = data_and_weights
    result = run_train_bundle(
        "monai_bundle/configs/train.json", REPO, offline_env(tmp_path),
        "--dataset_dir", str(dataset), "--run_dir", str(tmp_path / "run"), "--method", "pix2pix",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert output.count("method 'pix2pix' is not one of lamegan, cyclegan, stillgan, miinet") == 1, output[-3000:]
