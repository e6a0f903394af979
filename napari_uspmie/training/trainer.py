"""CycleGAN / LaMEGAN training engine: a ``monai.engines.Trainer`` running the paper's iteration.

One iteration (METHOD.md section 2, CycleGAN's order):

1. forward both cycles: ``fake_B = G_A(a)``, ``rec_A = G_B(fake_B)``, ``fake_A = G_B(b)``,
   ``rec_B = G_A(fake_A)``;
2. update G_A and G_B together, discriminators frozen: LSGAN terms ``D_A(fake_B) -> 1``
   and ``D_B(fake_A) -> 1``, cycle L1 terms times ``lambda_cycle``, identity terms times
   ``lambda_cycle * lambda_identity`` (off in LaMEGAN), the perceptual terms times
   ``lambda_perceptual`` (LaMEGAN's Laplacian band, MIINet's images) and StillGAN's
   illumination and structure terms times ``lambda_cycle * lambda_illumination`` and
   ``lambda_cycle * lambda_structure`` (relative weights, as in the official code);
3. update D_A (real B vs. pooled fake B) and D_B (real A vs. pooled fake A), each with
   ``0.5 * (MSE(D(real), 1) + MSE(D(fake), 0))``.

``D_A`` judges domain B and ``D_B`` domain A, as in CycleGAN's code.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import ignite.distributed as idist
import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torch.optim.optimizer import Optimizer

from napari_uspmie.errors import ErrorInWorker, ExplainedError, find_explained, log_error
from napari_uspmie.models.losses import LSGANLoss, discriminator_loss
from napari_uspmie.training.image_pool import ImagePool

__all__ = [
    "CycleGANTrainer",
    "NonFiniteLossError",
    "prepare_unpaired_batch",
    "unwrap",
]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError, ExplainedError):
    """A loss became NaN or infinite; raised before the weights see it."""


class _DropExplainedStopLines(logging.Filter):
    """Drops ignite's ERROR lines "... terminating due to exception: <message>" for explained errors.

    Ignite logs them while it handles the exception (``sys.exc_info()`` is that exception);
    the trainer logs the message of an explained error once itself, so they would only repeat it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or find_explained(sys.exc_info()[1]) is None


_DROP_EXPLAINED_STOP_LINES = _DropExplainedStopLines()


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``, else ``net`` itself."""
    return net.module if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else net


def prepare_unpaired_batch(
    batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real_A, real_B)`` from a batch of :class:`~napari_uspmie.training.data.UnpairedDataset`, on ``device``."""
    if not isinstance(batchdata, dict) or "A" not in batchdata or "B" not in batchdata:
        raise ValueError("unpaired training batches must be dicts with keys 'A' and 'B'.")
    return tuple(  # type: ignore[return-value]
        torch.as_tensor(batchdata[k]).to(device=device, non_blocking=non_blocking, **kwargs) for k in ("A", "B")
    )


def _set_requires_grad(nets: Sequence[nn.Module], flag: bool) -> None:
    for net in nets:
        net.requires_grad_(flag)


class CycleGANTrainer(Trainer):
    """LaMEGAN / CycleGAN trainer for two generators and two discriminators.

    Args:
        device: device of the networks and the data.
        max_epochs: epochs to train (paper: ``n_epochs + n_epochs_decay`` = 300).
        train_data_loader: yields dicts with ``"A"`` and ``"B"`` image batches in [-1, 1].
        generator_ab: G_A, A (low quality) -> B (high quality): the enhancer.
        generator_ba: G_B, B -> A.
        discriminator_a: D_A, judges domain B images (real B vs. G_A's output).
        discriminator_b: D_B, judges domain A images.
        optimizer_g: one optimizer over both generators' parameters.
        optimizer_d: one optimizer over both discriminators' parameters.
        perceptual_loss: :class:`~napari_uspmie.models.losses.LaplacianPerceptualLoss` (or any
            ``loss(real, translated)``); ``None`` or a disabled loss gives plain CycleGAN.
        lambda_cycle: weight of each cycle L1 term (paper: 10).
        lambda_identity: identity weight relative to ``lambda_cycle`` (LaMEGAN: 0).
        lambda_perceptual: weight of each perceptual term (paper: 0.25).
        illumination_loss: StillGAN's ``loss(enhanced)`` on G_A's output, or ``None``. Term names end
            in the generator they train, as ``loss_G_A``: ``loss_illumination_A``, ``loss_structure_A``
            (real A vs G_A's output) and ``loss_structure_B``.
        structure_loss: StillGAN's ``loss(real, translated)`` in both directions, or ``None``.
        lambda_illumination: illumination weight relative to ``lambda_cycle`` (StillGAN: 0.1).
        lambda_structure: structure weight relative to ``lambda_cycle`` (StillGAN: 0.5).
        pool_size: capacity of each fake-image history pool (paper: 100).
        gan_loss: adversarial loss, default least squares.
        cycle_loss: cycle/identity distance, default L1.
        inferer: runs the generators (``inferer(x, net)``), default a plain forward.
        epoch_length, non_blocking, iteration_update, postprocessing, key_train_metric,
        additional_metrics, metric_cmp_fn, train_handlers, event_names, event_to_attr,
        decollate, to_kwargs, amp_kwargs: as for MONAI's ``SupervisedTrainer``.
        prepare_batch: ``(batch, device, non_blocking, **to_kwargs) -> (real_A, real_B)``.
        amp: mixed precision with gradient scaling; used on CUDA only (ignored on CPU).
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        seed: seed of the image pools' random choices.
        checkpoint_dir: named in the message when a loss becomes non-finite.

    Raises:
        NonFiniteLossError: during ``run`` when a generator or discriminator loss is NaN/Inf;
            no optimizer step has used it, so the last checkpoint and the weights stay good.

    An explained error (:class:`~napari_uspmie.errors.ExplainedError`, also as the cause of
    a wrapper such as MONAI's transform error) stops ``run`` with its message logged once and
    without the ``EXCEPTION_RAISED`` handlers; other exceptions go through them as usual.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator_ab: nn.Module,
        generator_ba: nn.Module,
        discriminator_a: nn.Module,
        discriminator_b: nn.Module,
        optimizer_g: Optimizer,
        optimizer_d: Optimizer,
        perceptual_loss: Callable | None = None,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.0,
        lambda_perceptual: float = 0.25,
        illumination_loss: Callable | None = None,
        structure_loss: Callable | None = None,
        lambda_illumination: float = 0.0,
        lambda_structure: float = 0.0,
        pool_size: int = 100,
        gan_loss: Callable | None = None,
        cycle_loss: Callable | None = None,
        inferer: Inferer | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = prepare_unpaired_batch,
        iteration_update: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        seed: int | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        device = torch.device(device)
        if amp and device.type != "cuda":
            logger.info("AMP requested on %s: mixed precision is used on CUDA only, training in fp32.", device)
            amp = False
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Ignite's first look at the process group is collective: every rank's trainer takes it
            # here, before rank 0 alone attaches its checkpoint handlers (which would wait forever).
            idist.get_rank()
        # Before the base class attaches the handlers: checkpoint handlers save and restore the pools.
        self.pool_a = ImagePool(pool_size, seed=seed)  # fakes of domain A, shown to D_B
        self.pool_b = ImagePool(pool_size, seed=None if seed is None else seed + 1)  # fakes of domain B, for D_A
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.logger.addFilter(_DROP_EXPLAINED_STOP_LINES)  # a no-op when already there (one logger per class)
        self.generator_ab = generator_ab
        self.generator_ba = generator_ba
        self.discriminator_a = discriminator_a
        self.discriminator_b = discriminator_b
        # MONAI handlers and tools look for `engine.network`: the enhancer.
        self.network = generator_ab
        self.optimizer_g = optimizer_g
        self.optimizer_d = optimizer_d
        self.perceptual_loss = perceptual_loss
        self.lambda_cycle = float(lambda_cycle)
        self.lambda_identity = float(lambda_identity)
        self.lambda_perceptual = float(lambda_perceptual)
        self.illumination_loss = illumination_loss if lambda_illumination > 0 else None
        self.structure_loss = structure_loss if lambda_structure > 0 else None
        self.lambda_illumination = float(lambda_illumination)
        self.lambda_structure = float(lambda_structure)
        self.gan_loss = gan_loss if gan_loss is not None else LSGANLoss()
        self.cycle_loss = cycle_loss if cycle_loss is not None else nn.L1Loss()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.optim_set_to_none = optim_set_to_none
        self.checkpoint_dir = checkpoint_dir

    def run(self) -> None:  # type: ignore[override]
        """Train; calling it again continues from the current state (or a loaded checkpoint)."""
        # One scaler for both optimizers, updated once per iteration (PyTorch's recipe for
        # several losses and optimizers); torch.amp's API instead of the deprecated cuda one.
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        Workflow.run(self)

    def _autocast(self):
        return torch.autocast("cuda", **self.amp_kwargs) if self.amp else nullcontext()

    def _use_perceptual(self) -> bool:
        return (
            self.perceptual_loss is not None
            and self.lambda_perceptual > 0
            and getattr(self.perceptual_loss, "enabled", True)
        )

    def _check_finite(self, engine: Any, name: str, terms: dict[str, float]) -> None:
        total = sum(terms.values())
        if math.isfinite(total):
            return
        where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        detail = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        ckpt = f" in {self.checkpoint_dir}" if self.checkpoint_dir else ""
        message = (
            f"training stopped: {name} is {total} at {where} ({detail}). No optimizer step used it, so the "
            f"weights and the last checkpoint{ckpt} are intact. Check the input images, lower lr, or turn off amp; "
            "continue from the last checkpoint with --resume True."
        )
        error = NonFiniteLossError(message)
        log_error(logger, error)
        raise error

    def _handle_exception(self, e: BaseException) -> None:
        """Raise an explained error as it is; hand any other to ignite's ``EXCEPTION_RAISED`` handlers.

        MONAI's ``StatsHandler`` would log an explained error again, with a traceback, at every
        engine level it passes; its message is logged once here instead (when not logged yet).

        Raises:
            BaseException: ``e`` itself, when explained or when no handler takes it.
        """
        explained = find_explained(e)
        if explained is None:
            super()._handle_exception(e)
            return
        if not explained.logged:
            log_error(logger, explained)
        raise e

    def _step(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()

    def _iteration(self, engine: CycleGANTrainer, batchdata: dict[str, Any]) -> dict[str, float]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("must provide batch data for the current iteration.")
        if isinstance(batchdata, ErrorInWorker):  # a bad file read in a DataLoader worker process
            batchdata.reraise()
        real_a, real_b = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        g_a, g_b = engine.generator_ab, engine.generator_ba
        d_a, d_b = engine.discriminator_a, engine.discriminator_b
        for net in (g_a, g_b, d_a, d_b):
            net.train()  # a validation run in between leaves the generator in eval mode

        # 1. Both cycles.
        with engine._autocast():
            fake_b = engine.inferer(real_a, g_a)
            rec_a = engine.inferer(fake_b, g_b)
            fake_a = engine.inferer(real_b, g_b)
            rec_b = engine.inferer(fake_a, g_a)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # 2. Generators together, discriminators frozen. The discriminators run unwrapped
        # here: under DistributedDataParallel a frozen wrapped module would wait for
        # gradients that never come.
        _set_requires_grad((d_a, d_b), False)
        engine.optimizer_g.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            terms: dict[str, torch.Tensor] = {
                "loss_G_A": engine.gan_loss(unwrap(d_a)(fake_b), True),
                "loss_G_B": engine.gan_loss(unwrap(d_b)(fake_a), True),
                "loss_cycle_A": engine.cycle_loss(rec_a, real_a) * engine.lambda_cycle,
                "loss_cycle_B": engine.cycle_loss(rec_b, real_b) * engine.lambda_cycle,
            }
            if engine.lambda_identity > 0:
                weight = engine.lambda_cycle * engine.lambda_identity
                terms["loss_idt_A"] = engine.cycle_loss(engine.inferer(real_b, g_a), real_b) * weight
                terms["loss_idt_B"] = engine.cycle_loss(engine.inferer(real_a, g_b), real_a) * weight
            if engine._use_perceptual():
                terms["loss_perceptual_A"] = engine.perceptual_loss(real_a, fake_b) * engine.lambda_perceptual
                terms["loss_perceptual_B"] = engine.perceptual_loss(real_b, fake_a) * engine.lambda_perceptual
            if engine.illumination_loss is not None:
                weight = engine.lambda_cycle * engine.lambda_illumination
                terms["loss_illumination_A"] = engine.illumination_loss(fake_b) * weight
            if engine.structure_loss is not None:
                weight = engine.lambda_cycle * engine.lambda_structure
                terms["loss_structure_A"] = engine.structure_loss(real_a, fake_b) * weight
                terms["loss_structure_B"] = engine.structure_loss(real_b, fake_a) * weight
            loss_g = torch.stack([t.float() for t in terms.values()]).sum()
        values = dict(zip(terms, torch.stack([t.detach().float() for t in terms.values()]).tolist(), strict=True))
        engine._check_finite(engine, "loss_G", values)
        engine._step(loss_g, engine.optimizer_g)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        # 3. Discriminators, on real images and pooled fakes.
        _set_requires_grad((d_a, d_b), True)
        engine.optimizer_d.zero_grad(set_to_none=engine.optim_set_to_none)
        pooled_b = engine.pool_b.query(fake_b)
        pooled_a = engine.pool_a.query(fake_a)
        with engine._autocast():
            loss_d_a = discriminator_loss(engine.gan_loss, d_a(real_b), d_a(pooled_b))
            loss_d_b = discriminator_loss(engine.gan_loss, d_b(real_a), d_b(pooled_a))
            loss_d = loss_d_a + loss_d_b
        d_values = dict(zip(("loss_D_A", "loss_D_B"), torch.stack([loss_d_a, loss_d_b]).detach().tolist(), strict=True))
        engine._check_finite(engine, "loss_D", d_values)
        engine._step(loss_d, engine.optimizer_d)
        if engine.scaler is not None:
            engine.scaler.update()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)

        output = {"loss_G": float(sum(values.values())), **values, **d_values}
        output["lr_G"] = float(engine.optimizer_g.param_groups[0]["lr"])
        output["lr_D"] = float(engine.optimizer_d.param_groups[0]["lr"])
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output
