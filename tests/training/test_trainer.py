"""The LaMEGAN training engine: image pool, LR policy, one iteration's losses and update order,
the NaN stop, and how explained errors stop it."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines.utils import IterationEvents

from napari_uspmie.bundle.workflow import install_explained_error_hook
from napari_uspmie.errors import ImageReadError
from napari_uspmie.models.losses import LaplacianPerceptualLoss
from napari_uspmie.models.networks import PatchDiscriminator, ResnetGenerator
from napari_uspmie.training.handlers import GeneratorExporter, TrainingCheckpointSaver, latest_checkpoint
from napari_uspmie.training.image_pool import ImagePool
from napari_uspmie.training.schedule import LinearDecayLambda, linear_decay_scheduler
from napari_uspmie.training.trainer import CycleGANTrainer, NonFiniteLossError
from napari_uspmie.training.transforms import SourceReadError
from tests.unpaired_data import ANATOMICAL, TINY_GENERATOR, camera_crops


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
    TrainingCheckpointSaver(
        str(tmp_path), {"generator_ab": nets[0]}, extra_state={"network_def_kwargs": TINY_GENERATOR}
    ).attach(trainer)
    GeneratorExporter(str(tmp_path), nets[0], TINY_GENERATOR).attach(trainer)

    @trainer.on(Events.EPOCH_COMPLETED(once=1))
    def corrupt_second_epoch(engine):
        data[1] = {"A": torch.full_like(good["A"], float("nan")), "B": good["B"]}

    with pytest.raises(NonFiniteLossError, match=r"loss_G is nan at epoch 2, iteration 4 .*intact"):
        trainer.run()
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=1.pt"
    ckpt = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 and ckpt["network_def_kwargs"] == TINY_GENERATOR  # end of epoch 1
    assert all(torch.isfinite(v).all() for v in ckpt["generator_ab"].values())
    assert all(torch.isfinite(p).all() for p in nets[0].parameters())  # no step took the NaN
    exported = ResnetGenerator(**json.loads((tmp_path / "model_config.json").read_text()))
    exported.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))


# ----------------------------------------------------------------------------- explained stops


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

    from napari_uspmie.errors import ErrorInWorker
    from napari_uspmie.training.data import DatasetError, UnpairedDataset
    from napari_uspmie.training.transforms import LoadImageSliced

    cut = tmp_path / "cut.nii"
    cut.write_bytes(ANATOMICAL.read_bytes()[: ANATOMICAL.stat().st_size // 3])
    item = {"image": str(cut), "kind": "nifti", "slice": 0, "axis": 0, "name": "cut.nii"}
    dataset = UnpairedDataset({"A": [item], "B": [item]}, transform=LoadImageSliced("image"))
    with pytest.raises(DatasetError, match=r"domain A .*no readable images left \(unreadable: cut\.nii\)"):
        dataset[0]  # the only item of A cannot be read: skipping it leaves nothing
    loader = DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=UnpairedDataset.collate)
    record = next(iter(loader))
    assert isinstance(record, ErrorInWorker) and record.error_type is DatasetError
    assert "unreadable: cut.nii" in record.message and "Traceback" not in record.message
    with pytest.raises(DatasetError, match=r"^domain A .*cut\.nii"):
        record.reraise()
