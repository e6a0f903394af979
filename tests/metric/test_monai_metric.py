"""LaSSIMMetric and its Ignite handler: per-item agreement, reductions, aggregation in an Ignite run."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.handlers import from_engine
from skimage import data

from napari_uspmie import LaSSIMHandler, LaSSIMMetric, lassim
from tests.reference import reference_lassim


@pytest.fixture(scope="module")
def pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seven (degraded, clean) gray pairs from real pictures, 96x112, as (1, H, W) float64 tensors."""
    out = []
    for i, image in enumerate([data.camera(), data.coins(), data.moon(), data.page(), data.text(), data.brick()]):
        clean = cv2.resize(image, (112, 96), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
        k = 3 + 2 * (i % 4)
        out.append((cv2.blur(clean, (k, k)), clean))
    shifted = np.roll(out[0][1], 3, axis=1)  # a structural change
    out.append((shifted, out[0][1]))
    return [(torch.from_numpy(p)[None], torch.from_numpy(r)[None]) for p, r in out]


def test_metric_matches_reference_per_item(pairs):
    metric = LaSSIMMetric(level=2, max_level=4)
    y_pred = torch.stack([p for p, _ in pairs[:4]])
    y = torch.stack([r for _, r in pairs[:4]])
    scores = metric(y_pred, y)
    assert scores.shape == (4, 1)
    for i, (p, r) in enumerate(pairs[:4]):
        assert float(scores[i, 0]) == pytest.approx(reference_lassim(p[0].numpy(), r[0].numpy(), 2, 4), abs=1e-10)
    # a list of channel-first tensors gives the same scores; MetaTensors are accepted
    listed = metric([MetaTensor(p) for p, _ in pairs[:4]], [r for _, r in pairs[:4]])
    torch.testing.assert_close(listed, scores)


def test_reductions_and_not_nans(pairs):
    per_item = torch.tensor([lassim(p[None], r[None], level=2, max_level=4).item() for p, r in pairs])
    metric = LaSSIMMetric(level=2, max_level=4, reduction="none", get_not_nans=True)
    for start in range(0, len(pairs), 3):  # batches of 3, 3, 2
        chunk = pairs[start : start + 3]
        metric(torch.stack([p for p, _ in chunk]), torch.stack([r for _, r in chunk]))
    values, not_nans = metric.aggregate()
    torch.testing.assert_close(values[:, 0], per_item.to(values.dtype))
    assert not_nans.sum() == len(pairs)
    assert float(metric.aggregate("mean")[0]) == pytest.approx(float(per_item.mean()), abs=1e-6)
    assert float(metric.aggregate("sum")[0]) == pytest.approx(float(per_item.sum()), abs=1e-5)
    assert float(metric.aggregate("mean_batch")[0][0]) == pytest.approx(float(per_item.mean()), abs=1e-6)
    metric.reset()
    with pytest.raises(ValueError, match="call the metric"):
        metric.aggregate()


def test_dtype_option_and_errors(pairs):
    p, r = pairs[0]
    p32, r32 = p[None].float(), r[None].float()
    exact = LaSSIMMetric(level=2, max_level=4, dtype="float64")(p32, r32)
    assert exact.dtype == torch.float64
    fast = LaSSIMMetric(level=2, max_level=4)(p32, r32)
    assert fast.dtype == torch.float32 and float(fast) == pytest.approx(float(exact), abs=1e-4)
    with pytest.raises(ValueError, match="floating torch dtype"):
        LaSSIMMetric(dtype="int64")
    with pytest.raises(ValueError, match="level must be"):
        LaSSIMMetric(level=6, max_level=5)
    with pytest.raises(ValueError, match="same shape"):
        LaSSIMMetric(level=2, max_level=4)(p[None], r[None, :, :90])
    with pytest.raises(ValueError, match="too small"):
        LaSSIMMetric(level=4)(p[None], r[None])  # level 4 needs 97 pixels a side; these have 96


def _engine(pairs, batch_sizes):
    """An evaluator-like Ignite engine whose output is a MONAI-style dict batch."""
    batches, start = [], 0
    for size in batch_sizes:
        chunk = pairs[start : start + size]
        start += size
        batches.append([{"pred": p, "image": r} for p, r in chunk])
    engine = Engine(lambda eng, batch: batch)
    return engine, batches


def test_handler_aggregates_over_an_ignite_run(pairs):
    engine, batches = _engine(pairs, [3, 2, 2])
    handler = LaSSIMHandler(level=2, max_level=4, output_transform=from_engine(["pred", "image"]))
    handler.attach(engine, "lassim")
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda eng: seen.append(eng.state.metrics["lassim"]))
    engine.run(batches, max_epochs=2)
    per_item = [float(lassim(p[None], r[None], level=2, max_level=4)) for p, r in pairs]
    assert len(seen) == 2  # the buffer is reset at every epoch, so both epochs agree
    assert seen[0] == pytest.approx(np.mean(per_item), abs=1e-6)  # MONAI's "mean" reduction is float32
    assert seen[1] == pytest.approx(seen[0], abs=1e-12)
    details = engine.state.metric_details["lassim"]
    assert details.shape == (len(pairs), 1)
    np.testing.assert_allclose(details[:, 0].numpy(), per_item, atol=1e-10)
    assert details[-1, 0] < 0.8  # the shifted pair: structure changed


def test_handler_from_bundle_config(pairs):
    config = {
        "lassim": {
            "_target_": "napari_uspmie.metric.handler.LaSSIMHandler",
            "level": 2,
            "max_level": 4,
            "dtype": "float64",
            "reduction": "sum",
            "output_transform": "$monai.handlers.from_engine(['pred', 'image'])",
        }
    }
    handler = ConfigParser(config).get_parsed_content("lassim")
    assert isinstance(handler, LaSSIMHandler)
    engine, batches = _engine(pairs, [4, 3])
    handler.attach(engine, "val_lassim")
    engine.run(batches, max_epochs=1)
    expected = sum(float(lassim(p[None], r[None], level=2, max_level=4)) for p, r in pairs)
    assert engine.state.metrics["val_lassim"] == pytest.approx(expected, abs=1e-9)
