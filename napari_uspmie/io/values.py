"""Casting results back to a file's pixel type: round, then saturate at the type's limits."""

from __future__ import annotations

import numpy as np

__all__ = ["cast_like"]


def cast_like(values: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Cast to ``dtype``; integer types get rounded values saturated exactly at their limits.

    Saturation is decided in float64 against the limits themselves, so values at or beyond
    ``2**31 - 1``, ``2**63 - 1`` or ``2**64 - 1`` come back as that limit instead of wrapping
    around (a float64 cannot hold ``2**63 - 1``: the plain clip-then-cast overflows).

    Args:
        values: array of any real dtype.
        dtype: the target type.

    Returns:
        A new array of ``dtype``; booleans are ``values > 0.5``.
    """
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if dtype.kind == "b":
        return values > 0.5
    if dtype.kind not in "iu":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    if values.dtype.kind == "b":
        return values.astype(dtype)
    if values.dtype.kind in "iu":
        return np.clip(_common_integers(values, dtype.kind, info), info.min, info.max).astype(dtype)
    if dtype.itemsize <= 2 and values.dtype.kind == "f" and values.dtype.itemsize >= 4:
        # 8- and 16-bit limits are exact in float32 and float64: saturate in the input's own precision
        rounded = np.rint(values)
        return np.clip(rounded, info.min, info.max, out=rounded).astype(dtype)
    return _saturate(np.rint(values.astype(np.float64)), info, dtype)


def _common_integers(values: np.ndarray, kind: str, info: np.iinfo) -> np.ndarray:
    """Integers as int64 (signed target) or uint64 (unsigned target), out-of-sign values already saturated."""
    if kind == "u":
        return np.where(values < 0, 0, values).astype(np.uint64)
    if values.dtype.kind == "u":
        return np.minimum(values.astype(np.uint64), np.uint64(info.max)).astype(np.int64)
    return values.astype(np.int64)


def _saturate(rounded: np.ndarray, info: np.iinfo, dtype: np.dtype) -> np.ndarray:
    """Rounded float64 values to ``dtype``, limits assigned as integers (never through a float cast)."""
    high = rounded >= float(info.max)
    low = rounded <= float(info.min)
    inside = np.where(high | low | ~np.isfinite(rounded), 0.0, rounded)
    out = inside.astype(dtype)
    out[high] = info.max
    out[low] = info.min
    return out
