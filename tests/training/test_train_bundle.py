"""LaMEGAN training: the engine's iteration, image pool, LR policy, NaN stop, and the bundle CLI.

The command-line tests run the real ``python -m monai.bundle run`` on a tiny grayscale
configuration (ngf 8, 2 residual blocks, 64x64) with a few real images per domain.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, verify_metadata
from monai.engines.utils import IterationEvents

from napari_uspmie.bundle.workflow import install_explained_error_hook
from napari_uspmie.errors import ImageReadError
from napari_uspmie.models.losses import LaplacianPerceptualLoss
from napari_uspmie.models.networks import PatchDiscriminator, ResnetGenerator
from napari_uspmie.models.vgg_weights import VGGWeightsUnavailableError
from napari_uspmie.training.handlers import GeneratorExporter, TrainingCheckpointSaver, latest_checkpoint
from napari_uspmie.training.image_pool import ImagePool
from napari_uspmie.training.trainer import (
    CycleGANTrainer,
    LinearDecayLambda,
    NonFiniteLossError,
    linear_decay_scheduler,
)
from napari_uspmie.training.transforms import SourceReadError
from tests.io_factories import file_hashes
from tests.unpaired_data import (
    ANATOMICAL,
    camera_crops,
    tiny_overrides,
    write_fake_vgg19,
    write_unpaired_dataset,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "monai_bundle" / "configs"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "meta_schema_20240725.json"
TINY = {"in_channels": 1, "out_channels": 1, "ngf": 8, "n_blocks": 2, "norm": "instance"}


# ----------------------------------------------------------------------------- bundle files


def test_train_config_has_every_required_property(tmp_path):
    # check_properties() builds every property (trainer, dataset ...): give it data and a scratch root.
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path / "run"),
        dataset_dir=str(dataset),
        perceptual_loss="lassim",
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert isinstance(workflow.trainer, CycleGANTrainer) and workflow.max_epochs == 300
    for key in ("bundle_root", "dataset_dir", "ckpt_dir", "device", "network_def", "network", "generator_ba",
                "discriminator_a", "discriminator_b", "train#trainer", "train#dataset", "train#inferer", "max_epochs",
                "in_channels", "ngf", "ndf", "n_blocks", "load_size", "patch_size", "batch_size", "lr", "n_epochs",
                "n_epochs_decay", "lambda_cycle", "lambda_identity", "lambda_perceptual", "level",
                "perceptual_loss", "vgg_weights", "pool_size", "resume"):  # fmt: skip
        assert key in workflow.parser, key


def test_train_config_keeps_the_paper_defaults():
    config = json.loads((CONFIGS / "train.json").read_text())
    paper = {"in_channels": 3, "ngf": 64, "ndf": 64, "n_blocks": 9, "load_size": [272, 480], "patch_size": 256,
             "batch_size": 1, "lr": 2e-4, "betas": [0.5, 0.999], "n_epochs": 200, "n_epochs_decay": 100,
             "lambda_cycle": 10.0, "lambda_identity": 0.0, "lambda_perceptual": 0.25, "level": 3,
             "perceptual_loss": "vgg19", "vgg_weights": None, "pool_size": 100, "resume": False}  # fmt: skip
    assert {k: config[k] for k in paper} == paper


def test_bundle_root_is_the_config_folder_from_any_cwd(tmp_path, monkeypatch):
    copied = tmp_path / "my_bundle"
    shutil.copytree(CONFIGS, copied / "configs")
    monkeypatch.chdir(tmp_path)
    workflow = ConfigWorkflow(config_file=str(copied / "configs" / "train.json"), workflow_type="train")
    workflow.initialize()
    assert workflow.bundle_root == str(copied.resolve())
    # outputs go to a run folder in the working directory, never into the bundle
    assert workflow.parser.get_parsed_content("ckpt_dir") == str(tmp_path / "runs" / "train" / "models")


def test_training_refuses_to_write_into_the_shipped_bundle(tmp_path):
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    shipped = REPO / "monai_bundle" / "models"
    before = file_hashes(shipped)
    result = _run_bundle(
        "monai_bundle/configs/train.json", REPO, _env(tmp_path),
        "--dataset_dir", str(dataset), "--ckpt_dir", str(shipped), "--perceptual_loss", "lassim",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "shipped bundle's models folder; training never writes there" in output
    assert file_hashes(shipped) == before


def test_multi_gpu_config_wraps_all_four_networks_in_ddp():
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")], workflow_type="train"
    )
    # Parsed only: building it needs a process group (tests/test_ddp.py runs it under torchrun).
    for key in ("network", "generator_ba", "discriminator_a", "discriminator_b"):
        assert workflow.parser[key]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert workflow.parser["train#dataloader#sampler"] == "@train#sampler"


def test_metadata_verifies_against_local_schema():
    meta = CONFIGS / "metadata.json"
    schema_md5 = hashlib.md5(SCHEMA.read_bytes()).hexdigest()  # the local copy is used, never downloaded
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA), hash_val=schema_md5)
    fmt = json.loads(meta.read_text())["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert fmt["inputs"]["image"]["num_channels"] == fmt["outputs"]["pred"]["num_channels"] == 1


# ----------------------------------------------------------------------------- engine pieces


def test_image_pool_fills_then_swaps_half_the_time():
    assert ImagePool(0).query(torch.ones(2, 1, 2, 2)).shape == (2, 1, 2, 2)
    pool = ImagePool(3, seed=0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool) == 3  # filling: images pass through
    always = ImagePool(3, swap_prob=1.0, seed=0)
    always.query(first)
    out = always.query(torch.full((1, 1, 1, 1), 9.0))
    assert float(out) in (0.0, 1.0, 2.0) and 9.0 in [float(x) for x in always.images]
    never = ImagePool(3, swap_prob=0.0, seed=0)
    never.query(first)
    assert float(never.query(torch.full((1, 1, 1, 1), 9.0))) == 9.0
    half = ImagePool(100, seed=1)
    half.query(torch.zeros(100, 1, 1, 1))
    swapped = sum(float(half.query(torch.full((1, 1, 1, 1), float(i + 1)))) != i + 1 for i in range(400))
    assert 150 < swapped < 250
    fake = torch.zeros(1, 1, 1, 1, requires_grad=True) * 2
    assert not half.query(fake).requires_grad and not any(x.requires_grad for x in half.images)


def test_image_pool_state_round_trip_continues_identically():
    pool = ImagePool(4, seed=3)
    pool.query(torch.randn(6, 1, 2, 2))
    restored = ImagePool(4, seed=99)
    restored.load_state_dict(pool.state_dict())
    new = torch.randn(5, 1, 2, 2)
    assert torch.equal(pool.query(new), restored.query(new))  # same stored images, same random choices
    with pytest.raises(ValueError, match="pool_size"):
        ImagePool(2).load_state_dict(pool.state_dict())


def test_linear_decay_policy_and_resume_keeps_new_schedule():
    f = LinearDecayLambda(200, 100)
    assert [f(e) for e in (0, 199)] == [1.0, 1.0]
    assert f(200) == pytest.approx(1 - 1 / 101) and f(299) == pytest.approx(1 / 101)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_decay_scheduler(opt, 2, 2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3])
    state = sched.state_dict()
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    longer = linear_decay_scheduler(opt2, 4, 2)  # a resumed run that trains longer
    longer.load_state_dict(state)
    assert longer.last_epoch == 4 and opt2.param_groups[0]["lr"] == pytest.approx(1 - 1 / 3)


def _tiny_nets(seed: int = 0):
    torch.manual_seed(seed)
    return (
        ResnetGenerator(1, 1, ngf=8, n_blocks=2),
        ResnetGenerator(1, 1, ngf=8, n_blocks=2),
        PatchDiscriminator(1, ndf=8),
        PatchDiscriminator(1, ndf=8),
    )


def _real_batch():
    a, b = (torch.from_numpy(c[:64, :64].astype(np.float32) / 127.5 - 1)[None, None] for c in camera_crops(2))
    return {"A": a, "B": b}


def _trainer(nets, data, **kwargs):
    g_a, g_b, d_a, d_b = nets
    opt_g = torch.optim.Adam(list(g_a.parameters()) + list(g_b.parameters()), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d_a.parameters()) + list(d_b.parameters()), lr=2e-4, betas=(0.5, 0.999))
    return CycleGANTrainer("cpu", kwargs.pop("max_epochs", 1), data, g_a, g_b, d_a, d_b, opt_g, opt_d, **kwargs)


def test_iteration_losses_and_update_order():
    nets = _tiny_nets()
    g_a0, g_b0, d_a0, d_b0 = (copy.deepcopy(n) for n in nets)
    batch = _real_batch()
    perceptual = LaplacianPerceptualLoss("lassim", level=2)
    trainer = _trainer(nets, [batch], perceptual_loss=perceptual, lambda_identity=0.5, pool_size=4, seed=0)
    seen = {}

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def after_generator_step(engine):
        # Generators stepped, discriminators not yet, and they received no gradient.
        seen["d_untouched"] = all(
            torch.equal(p, q) for p, q in zip(nets[2].parameters(), d_a0.parameters(), strict=True)
        )
        seen["d_no_grad"] = all(p.grad is None for p in nets[2].parameters())
        seen["g_moved"] = not all(
            torch.equal(p, q) for p, q in zip(nets[0].parameters(), g_a0.parameters(), strict=True)
        )

    trainer.run()
    assert seen == {"d_untouched": True, "d_no_grad": True, "g_moved": True}
    assert not all(torch.equal(p, q) for p, q in zip(nets[2].parameters(), d_a0.parameters(), strict=True))

    a, b = batch["A"], batch["B"]
    with torch.no_grad():
        fake_b, fake_a = g_a0(a), g_b0(b)
        expected = {
            "loss_G_A": F.mse_loss(d_a0(fake_b), torch.ones_like(d_a0(fake_b))),
            "loss_G_B": F.mse_loss(d_b0(fake_a), torch.ones_like(d_b0(fake_a))),
            "loss_cycle_A": 10 * F.l1_loss(g_b0(fake_b), a),
            "loss_cycle_B": 10 * F.l1_loss(g_a0(fake_a), b),
            "loss_idt_A": 10 * 0.5 * F.l1_loss(g_a0(b), b),
            "loss_idt_B": 10 * 0.5 * F.l1_loss(g_b0(a), a),
            "loss_perceptual_A": 0.25 * perceptual(a, fake_b),
            "loss_perceptual_B": 0.25 * perceptual(b, fake_a),
            # The pools were empty: the discriminators saw this iteration's fakes.
            "loss_D_A": 0.5 * (((d_a0(b) - 1) ** 2).mean() + (d_a0(fake_b) ** 2).mean()),
            "loss_D_B": 0.5 * (((d_b0(a) - 1) ** 2).mean() + (d_b0(fake_a) ** 2).mean()),
        }
    out = trainer.state.output
    for key, value in expected.items():
        assert out[key] == pytest.approx(float(value), rel=1e-4, abs=1e-6), key
    generator_terms = [k for k in expected if not k.startswith("loss_D")]
    assert out["loss_G"] == pytest.approx(sum(out[k] for k in generator_terms), rel=1e-6)
    assert len(trainer.pool_a) == len(trainer.pool_b) == 1


def test_cyclegan_baseline_has_no_perceptual_term():
    trainer = _trainer(_tiny_nets(), [_real_batch()], perceptual_loss=LaplacianPerceptualLoss("none"))
    trainer.run()
    assert not any(k.startswith("loss_perceptual") for k in trainer.state.output)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    nets = _tiny_nets()
    good = _real_batch()
    data = [good, dict(good)]
    trainer = _trainer(nets, data, max_epochs=3, checkpoint_dir=str(tmp_path))
    TrainingCheckpointSaver(str(tmp_path), {"generator_ab": nets[0]}, extra_state={"network_def_kwargs": TINY}).attach(
        trainer
    )
    GeneratorExporter(str(tmp_path), nets[0], TINY).attach(trainer)

    @trainer.on(Events.EPOCH_COMPLETED(once=1))
    def corrupt_second_epoch(engine):
        data[1] = {"A": torch.full_like(good["A"], float("nan")), "B": good["B"]}

    with pytest.raises(NonFiniteLossError, match=r"loss_G is nan at epoch 2, iteration 4 .*intact"):
        trainer.run()
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=1.pt"
    ckpt = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 and ckpt["network_def_kwargs"] == TINY  # end of epoch 1
    assert all(torch.isfinite(v).all() for v in ckpt["generator_ab"].values())
    assert all(torch.isfinite(p).all() for p in nets[0].parameters())  # no step took the NaN
    exported = ResnetGenerator(**json.loads((tmp_path / "model_config.json").read_text()))
    exported.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))


# ----------------------------------------------------------------------------- the bundle CLI


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # two shared cores: one thread per process is fastest and steady
        TORCH_HOME=str(tmp_path / "torch_home"),
        # A closed local port: nothing can ever be downloaded by these tests.
        NAPARI_USPMIE_VGG19_URL="http://127.0.0.1:9/vgg19-dcbb9e9d.pth",
    )
    return env


def _run_bundle(config: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, *tiny_overrides(), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _tb_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Two epochs through the CLI, from the repository root, with the paper's VGG19 loss."""
    tmp = tmp_path_factory.mktemp("bundle")
    dataset = write_unpaired_dataset(tmp / "data")  # A: 3 PNG + 2 NIfTI slices, B: 3 PNG + 1 DICOM
    weights = write_fake_vgg19(tmp / "vgg19.pth")
    result = _run_bundle(
        "monai_bundle/configs/train.json", REPO, _env(tmp),
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
    }  # fmt: skip
    assert len(ckpt["image_pool_a"]["images"]) == len(ckpt["image_pool_b"]["images"]) == 2 * 5  # every fake so far
    assert ckpt["trainer"]["iteration"] == 2 * 5 and ckpt["network_def_kwargs"] == TINY  # 2 epochs x 5 A items
    kwargs = json.loads((ckpt_dir / "model_config.json").read_text())
    generator = ResnetGenerator(**kwargs)
    generator.load_state_dict(torch.load(ckpt_dir / "model.pt", weights_only=True))
    assert all(torch.equal(v, ckpt["generator_ab"][k]) for k, v in generator.state_dict().items())
    samples = sorted(p.name for p in (tmp / "out" / "samples").glob("epoch_0002_*.png"))
    assert len(samples) == 2
    tags = _tb_tags(tmp / "out")
    assert {"loss_G", "loss_G_A", "loss_cycle_B", "loss_perceptual_A", "loss_D_A", "loss_D_B", "lr_G"} <= tags
    assert "val_lassim" in tags


def test_cli_resumes_from_another_cwd_with_a_copied_bundle(first_run):
    tmp, first = first_run
    assert first.returncode == 0
    bundle = tmp / "copied_bundle"
    shutil.copytree(CONFIGS, bundle / "configs", dirs_exist_ok=True)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    result = _run_bundle(
        str(bundle / "configs" / "train.json"), elsewhere, _env(tmp),
        "--dataset_dir", str(tmp / "data"), "--ckpt_dir", str(tmp / "ckpt"), "--resume", "True",
        "--n_epochs", "2", "--n_epochs_decay", "1", "--perceptual_loss", "lassim", "--pool_size", "20",
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
    # logs and samples went to the run folder of the working directory, never into the bundle.
    assert list((elsewhere / "runs" / "train" / "logs" / "samples").glob("epoch_0003_*.png"))
    assert not (bundle / "runs").exists() and not (bundle / "models").exists()


def test_bundle_stops_before_training_without_vgg_weights_offline(tmp_path, monkeypatch, capsys):
    # The bundle workflow in this process (what `monai.bundle run` drives), saving a CLI start-up.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv("NAPARI_USPMIE_VGG19_URL", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth")  # offline
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path / "run"),
        dataset_dir=str(dataset),
        num_workers=0,
    )
    workflow.initialize()
    with pytest.raises(RuntimeError) as err:
        workflow.run()
    cause = err.value.__cause__
    while cause is not None and not isinstance(cause, VGGWeightsUnavailableError):
        cause = cause.__cause__
    assert isinstance(cause, VGGWeightsUnavailableError)
    for text in (str(cause), capsys.readouterr().out):  # the bundle's logging.conf logs to stdout
        assert "--vgg_weights" in text and "torch hub cache" in text and "internet" in text
    assert not (tmp_path / "run" / "models").exists()  # stopped before any training or checkpoint


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
    if case.startswith("unreadable_file"):  # header and gzip trailer pass the scan; its voxels fail when loaded
        cut = dataset / "A" / "cut.nii.gz"
        packed = bytearray(gzip.compress(ANATOMICAL.read_bytes()))
        middle = len(packed) // 2
        packed[middle : middle + 64] = bytes(b ^ 0xFF for b in packed[middle : middle + 64])
        cut.write_bytes(bytes(packed))
        # In a DataLoader worker (the config's default) the error comes back to the trainer as text only.
        workers = ["--num_workers", "2"] if case.endswith("in_worker") else []
        return [*lassim, *workers], f"cannot read {cut}"
    assert case == "no_vgg_weights"  # offline (see _env), nothing in the hub cache
    return ["--dataset_dir", str(dataset), "--perceptual_loss", "vgg19"], "--vgg_weights /path/to/vgg19-dcbb9e9d.pth"


@pytest.mark.parametrize(
    "case", ["nan_loss", "missing_dataset", "unreadable_file", "unreadable_file_in_worker", "no_vgg_weights"]
)
def test_cli_stops_on_an_explained_error_with_its_message_alone(tmp_path, case):
    args, expected = _explained_stop(case, tmp_path)
    result = _run_bundle(
        "monai_bundle/configs/train.json", REPO, _env(tmp_path),
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


def test_cli_keeps_the_traceback_of_an_unexpected_error(tmp_path):
    dataset = write_unpaired_dataset(tmp_path / "data", n_png=1, nifti_slices=1)
    result = _run_bundle(
        "monai_bundle/configs/train.json", REPO, _env(tmp_path),
        "--dataset_dir", str(dataset), "--ckpt_dir", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out"),
        "--perceptual_loss", "lassim", "--train#inferer", "$lambda x, net: 1 / 0",  # a bug inside the iteration
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_explained_error_hook_shows_the_message_once_and_passes_bugs_on(monkeypatch, caplog):
    passed_on = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: passed_on.append(exc[1]))
    install_explained_error_hook()
    install_explained_error_hook()  # a second install keeps one hook
    assert sys.excepthook.previous.__name__ == "<lambda>"
    unread = ImageReadError("scan.png: empty file.")
    wrapped = RuntimeError("Failed to evaluate ConfigExpression")
    wrapped.__cause__ = unread  # how MONAI wraps it: raise RuntimeError(...) from e
    sys.excepthook(RuntimeError, wrapped, None)
    sys.excepthook(RuntimeError, wrapped, None)
    assert passed_on == [] and caplog.text.count("scan.png: empty file.") == 1 and unread.logged
    bug = KeyError("raised in an except block")
    bug.__context__ = unread  # only an implicit context: the bug keeps its traceback
    sys.excepthook(KeyError, bug, None)
    assert passed_on == [bug]


def test_trainer_stops_on_an_explained_error_without_the_exception_handlers(caplog):
    trainer = _trainer(_tiny_nets(), [_real_batch()])
    handled = []
    trainer.add_event_handler(Events.EXCEPTION_RAISED, lambda engine, e: handled.append(e))
    bug = ZeroDivisionError("a bug")
    trainer._handle_exception(bug)
    assert handled == [bug]  # other exceptions reach the handlers (MONAI's StatsHandler logs them)
    wrapped = RuntimeError("applying transform")  # MONAI's wrapper of a failing transform
    wrapped.__cause__ = SourceReadError("cannot read x.nii")
    with pytest.raises(RuntimeError) as err:
        trainer._handle_exception(wrapped)
    assert err.value is wrapped and handled == [bug]
    assert caplog.text.count("cannot read x.nii") == 1 and wrapped.__cause__.logged


def test_an_explained_error_in_a_worker_comes_back_as_data_and_is_raised_again(tmp_path):
    """A DataLoader worker hands exceptions back as traceback text only; the dataset returns the
    explained error as a record instead, collation passes it on, and the trainer raises it again."""
    from torch.utils.data import DataLoader

    from napari_uspmie.errors import ErrorInWorker, find_explained
    from napari_uspmie.training.data import UnpairedDataset
    from napari_uspmie.training.transforms import LoadImageSliced

    cut = tmp_path / "cut.nii"
    cut.write_bytes(ANATOMICAL.read_bytes()[: ANATOMICAL.stat().st_size // 3])
    item = {"image": str(cut), "kind": "nifti", "slice": 0, "axis": 0, "name": "cut.nii"}
    dataset = UnpairedDataset({"A": [item], "B": [item]}, transform=LoadImageSliced("image"))
    with pytest.raises(RuntimeError) as caught:  # in the main process: raised as it is (MONAI wraps it)
        dataset[0]
    assert isinstance(find_explained(caught.value), SourceReadError)
    loader = DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=UnpairedDataset.collate)
    record = next(iter(loader))
    assert isinstance(record, ErrorInWorker) and record.error_type is SourceReadError
    assert record.message.startswith(f"cannot read {cut}: ") and "Traceback" not in record.message
    with pytest.raises(SourceReadError, match=r"^cannot read .*cut\.nii: "):
        record.reraise()
