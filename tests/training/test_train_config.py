"""The training bundle files: required properties, paper defaults, where outputs go, the multi-GPU
override, pieces defined once, renamed settings, metadata."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import torch
from monai.bundle import verify_metadata
from monai.transforms import Compose

from napari_uspmie.training.handlers import ResumeFromCheckpoint, TrainingCheckpointSaver
from napari_uspmie.training.trainer import CycleGANTrainer
from tests.unpaired_data import CONFIGS, REPO, TINY_SETTINGS, write_unpaired_dataset

SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"


def test_train_config_has_every_required_property(tmp_path, config_workflow):
    # check_properties() builds every property (trainer, dataset ...): give it data and a scratch root.
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    workflow = config_workflow(
        CONFIGS / "train.json",
        run_dir=str(tmp_path / "run"),
        dataset_dir=str(dataset),
        perceptual_loss="lassim",
        num_workers=0,
    )
    assert workflow.check_properties() == []
    assert isinstance(workflow.trainer, CycleGANTrainer) and workflow.max_epochs == 300
    for key in ("bundle_root", "dataset_dir", "ckpt_dir", "device", "network_def", "network", "generator_ba",
                "discriminator_a", "discriminator_b", "train#trainer", "train#dataset", "train#inferer", "max_epochs",
                "in_channels", "ngf", "ndf", "n_blocks", "load_size", "patch_size", "batch_size", "lr", "n_epochs",
                "n_epochs_decay", "lambda_cycle", "lambda_identity", "lambda_perceptual", "level",
                "perceptual_loss", "vgg_weights", "pool_size", "resume"):  # fmt: skip
        assert key in workflow.parser, key


def test_train_config_keeps_the_paper_defaults():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))  # method-dependent defaults resolve through "method"
    paper = {"in_channels": 3, "ngf": 64, "ndf": 64, "n_blocks": 9, "load_size": [272, 480], "patch_size": 256,
             "batch_size": 1, "lr": 2e-4, "betas": [0.5, 0.999], "n_epochs": 200, "n_epochs_decay": 100,
             "lambda_cycle": 10.0, "lambda_identity": 0.0, "lambda_perceptual": 0.25, "level": 3,
             "perceptual_loss": "vgg19", "vgg_weights": None, "pool_size": 100, "resume": False}  # fmt: skip
    assert parser["method"] == "lamegan"
    assert {k: parser.get_parsed_content(k) for k in paper} == paper


def test_bundle_root_is_the_config_folder_from_any_cwd(tmp_path, monkeypatch, config_workflow):
    copied = tmp_path / "my_bundle"
    shutil.copytree(CONFIGS, copied / "configs")
    monkeypatch.chdir(tmp_path)
    workflow = config_workflow(copied / "configs" / "train.json")
    assert workflow.bundle_root == str(copied.resolve())
    # outputs go to a run folder in the working directory, never into the bundle
    assert workflow.parser.get_parsed_content("ckpt_dir") == str(tmp_path / "runs" / "train" / "models")


def test_multi_gpu_config_wraps_all_four_networks_in_ddp(config_workflow):
    # Parsed only: building it needs a process group (test_ddp.py runs it under torchrun).
    workflow = config_workflow([CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json"], initialize=False)
    for key in ("network", "generator_ba", "discriminator_a", "discriminator_b"):
        assert workflow.parser[key]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert workflow.parser["train#dataloader#sampler"] == "@train#sampler"
    # Handlers that only rank 0 runs say so themselves, with the flag MONAI's own tracking handlers
    # use; the override leaves the handler lists alone (nothing is sliced off them by position).
    rank0_only = {"StatsHandler", "TensorBoardStatsHandler"} | {
        f"napari_uspmie.training.handlers.{name}" for name in ("TrainingCheckpointSaver", "GeneratorExporter")
    }
    for group in ("train#handlers", "validate#handlers"):
        for handler in workflow.parser[group]:
            assert (handler.get("_disabled_") == "@is_not_rank0") == (handler["_target_"] in rank0_only), handler
    assert not [key for key in json.loads((CONFIGS / "multi_gpu_train.json").read_text()) if "handlers" in key]


def _tiny_workflow(config_workflow, tmp_path: Path, **overrides):
    """``train.json`` with the tiny CPU settings, initialised on a small dataset."""
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    settings = {**TINY_SETTINGS, "perceptual_loss": "lassim", **overrides}
    return config_workflow(CONFIGS / "train.json", dataset_dir=str(dataset), run_dir=str(tmp_path / "run"), **settings)


def test_train_config_builds_shared_pieces_once(tmp_path, config_workflow):
    parser = _tiny_workflow(config_workflow, tmp_path).parser
    # one node of checkpointed objects: what is saved is what a resume loads, the same objects
    handlers = parser.get_parsed_content("train#handlers")
    saver = next(h for h in handlers if isinstance(h, TrainingCheckpointSaver))
    resume = next(h for h in handlers if isinstance(h, ResumeFromCheckpoint))
    assert set(resume.load_dict) == {"generator_ab", "generator_ba", "discriminator_a", "discriminator_b",
                                     "optimizer_g", "optimizer_d", "lr_scheduler_g", "lr_scheduler_d",
                                     "generator_average"}  # fmt: skip
    assert all(saver.save_dict[key] is value for key, value in resume.load_dict.items())
    assert resume.load_dict["generator_ab"] is parser.get_parsed_content("network")
    # one process: rank 0, every handler is there, the rank-0-only ones included
    assert [type(h).__name__ for h in handlers] == [
        "ResumeFromCheckpoint", "LrScheduleHandler", "LrScheduleHandler", "ValidationHandler",
        "StatsHandler", "TensorBoardStatsHandler", "TrainingCheckpointSaver", "GeneratorExporter",
    ]  # fmt: skip
    exporter = handlers[-1]
    assert resume.load_dict["generator_average"] is exporter.average  # the average exported is the one saved
    assert exporter.average.exported is resume.load_dict["generator_ab"]  # off by default: the trained generator
    assert [type(h).__name__ for h in parser.get_parsed_content("validate#handlers")] == [
        "StatsHandler", "TensorBoardStatsHandler", "TriptychSaver",
    ]  # fmt: skip
    # validation reads images as training does, without the random crop and flip
    train_steps = parser.get_parsed_content("train#preprocessing").transforms
    validate = parser.get_parsed_content("validate#preprocessing")
    assert [type(t).__name__ for t in train_steps] == [type(t).__name__ for t in validate.transforms] + [
        "RandSpatialCropd", "RandFlipd", "EnsureTyped",
    ]  # fmt: skip
    for item in parser.get_parsed_content("validate#dataset#data"):  # a PNG and a NIfTI slice
        image = validate(dict(item))["image"]
        assert image.shape == (1, 64, 64) and image.dtype == torch.float32
        assert torch.equal(image, Compose(train_steps[: len(validate.transforms)])(dict(item))["image"])


def _renamed_setting_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "is deprecated" in str(w.message) and "bundle setting" in str(w.message)]


def test_renamed_training_settings_still_take_effect_with_a_warning(tmp_path, config_workflow):
    """``pyramid_level`` is now ``level``, ``intensity_percentiles`` now ``percentiles``; the old ids
    work for one release and say which id replaces them."""

    def consumers(parser) -> dict[str, object]:
        saver = parser.get_parsed_content("validate#handlers")[-1]
        return {
            "perceptual loss level": parser.get_parsed_content("perceptual").level,
            "validation LaSSIM level": parser.get_parsed_content("validate#key_metric#val_lassim").metric_fn.level,
            "triptych level": saver.level,
            "training percentiles": parser.get_parsed_content("train#preprocessing").transforms[0].percentiles,
            "validation percentiles": parser.get_parsed_content("validate#preprocessing").transforms[0].percentiles,
        }

    expected = {"perceptual loss level": 2, "validation LaSSIM level": 2, "triptych level": 2,
                "training percentiles": (1.0, 99.0), "validation percentiles": (1.0, 99.0)}  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = _tiny_workflow(config_workflow, tmp_path / "old", pyramid_level=2, intensity_percentiles=[1, 99])
        assert consumers(old.parser) == expected
    messages = _renamed_setting_warnings(caught)
    assert any(w.category is FutureWarning for w in caught)
    assert sorted(messages) == [
        "bundle setting 'intensity_percentiles' is deprecated and will be removed in the next release; "
        "use '--percentiles' instead.",
        "bundle setting 'pyramid_level' is deprecated and will be removed in the next release; use '--level' instead.",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = _tiny_workflow(config_workflow, tmp_path / "new", level=2, percentiles=[1, 99])
        assert consumers(new.parser) == expected
    assert _renamed_setting_warnings(caught) == []


def test_metadata_verifies_against_local_schema():
    meta = CONFIGS / "metadata.json"
    schema_md5 = hashlib.md5(SCHEMA.read_bytes()).hexdigest()  # the local copy is used, never downloaded
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA), hash_val=schema_md5)
    fmt = json.loads(meta.read_text())["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert fmt["inputs"]["image"]["num_channels"] == fmt["outputs"]["pred"]["num_channels"] == 1
