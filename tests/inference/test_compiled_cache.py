"""The compiled-generator cache behind the default CPU path.

One real AOTInductor build of a small generator (a minute or two on two cores) is shared by the
tests that load it; the background build is exercised for real on weights that cannot load, so it
fails fast and must leave its note.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_uspmie.inference import compiled_cache
from napari_uspmie.inference.compiled_cache import CompiledGenerator, artifact_key, artifact_path, cached_runner
from napari_uspmie.inference.enhancer import Enhancer
from napari_uspmie.inference.layer_stream import convolution_layers, streamable
from napari_uspmie.inference.phase_upsample import PhaseResizeConv2d
from napari_uspmie.models.networks import ResnetGenerator

ARCH = {"in_channels": 1, "out_channels": 1, "ngf": 4, "n_blocks": 1, "norm": "instance", "upsample": "resize"}
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="AOTInductor builds C++ kernels with g++")


def small_generator(seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return ResnetGenerator(**ARCH).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, switched on (the suite turns it off everywhere else)."""
    monkeypatch.setenv("NAPARI_USPMIE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_USPMIE_COMPILED_CACHE", "on")
    return tmp_path / "cache" / "compiled"


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """The small generator's library, built once, the way the background process builds it."""
    folder = tmp_path_factory.mktemp("built")
    net = small_generator()
    weights = folder / "weights.pt"
    torch.save({"generator_ab": net.state_dict(), "network_def_kwargs": ARCH}, weights)
    return compiled_cache.build_artifact(weights, folder / "library.pt2"), net


def test_key_follows_the_weights_and_the_architecture():
    net = small_generator()
    assert artifact_key(net, ARCH) == artifact_key(small_generator(), dict(reversed(list(ARCH.items()))))
    assert artifact_key(net, ARCH) != artifact_key(small_generator(seed=1), ARCH)
    assert artifact_key(net, ARCH) != artifact_key(net, {**ARCH, "upsample": "transpose"})


def _runs_eagerly_like(runner, net) -> None:
    """``runner`` is ``net`` as the CPU runs it eagerly: rewritten layers, the same results."""
    assert not isinstance(runner, CompiledGenerator)
    assert any(isinstance(m, PhaseResizeConv2d) for m in runner.modules())
    x = torch.rand(2, 1, 40, 56) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(runner(x), net(x), rtol=0, atol=1e-5)


def test_off_by_environment_unknown_architecture_or_not_on_the_cpu(cache, monkeypatch):
    net = small_generator()
    _runs_eagerly_like(cached_runner(net, {}, torch.device("cpu")), net)  # nothing to rebuild it from
    assert cached_runner(net, ARCH, torch.device("cpu"), bf16=True) is net  # bfloat16 autocast: as it is
    assert cached_runner(net, ARCH, torch.device("meta")) is net
    monkeypatch.setenv("NAPARI_USPMIE_COMPILED_CACHE", "off")
    _runs_eagerly_like(cached_runner(net, ARCH, torch.device("cpu")), net)
    assert not cache.exists()  # nothing was built or written


@needs_compiler
def test_cached_library_runs_every_shape_like_the_eager_network(built_library, cache):
    library, net = built_library
    cache.mkdir(parents=True)
    shutil.copy(library, artifact_path(artifact_key(net, ARCH)))
    runner = cached_runner(net, ARCH, torch.device("cpu"), build=False)
    assert isinstance(runner, CompiledGenerator)
    # slices larger than a tile stream layer by layer through the library's eager network
    assert streamable(runner) and convolution_layers(runner) == convolution_layers(net)
    with torch.no_grad():
        for shape in [(1, 1, 64, 64), (3, 1, 48, 80), (2, 1, 16, 132)]:  # dynamic batch, height and width
            x = torch.rand(shape) * 2 - 1
            assert runner.fits(x)
            torch.testing.assert_close(runner(x), net(x), rtol=0, atol=1e-4)
        odd = torch.rand(1, 1, 30, 30)  # sides not multiples of 4: outside the compiled range, run eagerly
        assert not runner.fits(odd)
        torch.testing.assert_close(runner(odd), runner.network(odd), rtol=0, atol=0)
        torch.testing.assert_close(runner(odd), net(odd), rtol=0, atol=1e-5)
    # the default path picks it up: same result as an enhancer without the cache
    image = (np.random.default_rng(0).random((3, 50, 70)) * 1000).astype(np.int16)
    cached, eager = Enhancer(net, device="cpu", architecture=ARCH), Enhancer(net, device="cpu", cache_compiled=False)
    assert isinstance(cached.runner, CompiledGenerator) and "cached compiled" in repr(cached)
    _runs_eagerly_like(eager.runner, net)
    np.testing.assert_allclose(cached.enhance(image), eager.enhance(image), rtol=0, atol=1)


def test_a_failing_build_leaves_a_note_and_is_not_retried(cache, monkeypatch):
    net = small_generator()
    key = artifact_key(net, ARCH)
    # the background process gets weights it cannot load: it must fail, say why and clean up
    monkeypatch.setattr(torch, "save", lambda obj, path: open(path, "wb").write(b"not a checkpoint"))
    process = compiled_cache.start_build(net, ARCH, key)
    assert process is not None
    assert compiled_cache.start_build(net, ARCH, key) is None  # the lock keeps a second build out
    assert process.wait(timeout=300) == 1
    library = artifact_path(key)
    assert "CheckpointError" in library.with_suffix(".failed").read_text()
    assert not library.exists() and not library.with_suffix(".lock").exists()
    assert not library.with_suffix(".weights.pt").exists()
    assert compiled_cache.start_build(net, ARCH, key) is None  # not retried
    _runs_eagerly_like(cached_runner(net, ARCH, torch.device("cpu")), net)


def test_a_stale_lock_does_not_block_the_build_forever(cache, monkeypatch):
    net = small_generator()
    key = artifact_key(net, ARCH)
    lock = artifact_path(key).with_suffix(".lock")
    cache.mkdir(parents=True)
    lock.write_text("12345 0\n")
    assert compiled_cache.start_build(net, ARCH, key) is None  # a build may be under way
    old = time.time() - compiled_cache.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    launched = []
    monkeypatch.setattr(
        compiled_cache.subprocess, "Popen", lambda command, **kw: launched.append(command) or SimpleNamespace(pid=0)
    )
    assert compiled_cache.start_build(net, ARCH, key) is not None
    assert launched[0][:3] == [sys.executable, "-m", "napari_uspmie.inference.compiled_cache"]
    assert artifact_path(key).with_suffix(".weights.pt").is_file()


@needs_compiler
def test_bundle_inference_network_runs_the_cached_library(built_library, cache, tmp_path):
    from napari_uspmie.bundle.workflow import load_network
    from napari_uspmie.inference.checkpoint import load_generator

    library, net = built_library
    weights = tmp_path / "model.pt"
    torch.save(net.state_dict(), weights)
    loaded, architecture = load_generator(weights)  # what the bundle's loader sees: the key follows it
    cache.mkdir(parents=True)
    shutil.copy(library, artifact_path(artifact_key(loaded, architecture)))
    runner = load_network(small_generator(seed=3), weights, "cpu")
    assert isinstance(runner, CompiledGenerator)
    x = torch.rand(2, 1, 32, 48) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(runner(x), net(x), rtol=0, atol=1e-4)
    assert not isinstance(load_network(small_generator(), weights, "cpu", compile=False, bf16=True), CompiledGenerator)
