"""Benchmarks of napari-uspmie, run as modules from the repository root.

    python -m benchmarks.run_all --out docs                 # every benchmark, writes docs/benchmarks.md
    python -m benchmarks.run_all --quick --out DIR          # small sizes, for CI
    python -m benchmarks.bench_lassim --quick --out DIR/benchmarks_lassim.md   # one benchmark

Measurement lives in the ``bench_*`` modules, all timed by :func:`benchmarks.timing.time_calls`;
the Markdown pages they write are in :mod:`benchmarks.pages` and :mod:`benchmarks.targets`.
"""
