"""Casting back to a file's pixel type saturates at the type's limits, never wraps around."""

from __future__ import annotations

import numpy as np
import pytest

from napari_uspmie.io.values import cast_like

LIMITS = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-2147483648, 2147483647),
    "uint32": (0, 4294967295),
    "int64": (-9223372036854775808, 9223372036854775807),
    "uint64": (0, 18446744073709551615),
}


@pytest.mark.parametrize("dtype", sorted(LIMITS))
@pytest.mark.parametrize("source", ["float32", "float64"])
def test_float_values_saturate_at_the_limits(dtype, source):
    low, high = LIMITS[dtype]
    values = np.array([-1e30, low, -0.4, 0.6, 2.5, high, 1e30], dtype=source)
    out = cast_like(values, dtype)
    assert out.dtype == np.dtype(dtype)
    # rint rounds halves to even: 2.5 -> 2
    assert out.tolist() == [low, low, 0, 1, 2, high, high]


@pytest.mark.parametrize(
    ("values", "source", "dtype", "expected"),
    [
        ([2**31 - 1, -(2**31), 2**40], "int64", "int32", [2**31 - 1, -(2**31), 2**31 - 1]),
        ([2**63 - 1, -3], "int64", "uint64", [2**63 - 1, 0]),
        ([2**64 - 1, 5], "uint64", "int64", [2**63 - 1, 5]),
        ([300, -5], "int16", "uint8", [255, 0]),
        ([2**32 - 1], "uint32", "int32", [2**31 - 1]),
    ],
)
def test_integer_values_saturate_without_passing_through_floats(values, source, dtype, expected):
    assert cast_like(np.array(values, dtype=source), dtype).tolist() == expected


def test_float_and_bool_targets():
    values = np.array([0.2, 0.7])
    assert cast_like(values, np.float32).dtype == np.float32
    assert cast_like(values, bool).tolist() == [False, True]
