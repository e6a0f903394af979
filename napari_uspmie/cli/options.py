"""Option types that validate values when the command line is parsed, naming the allowed range.

A bad value stops the command before any work with argparse's one-line usage error
(``argument --level: must be a whole number from 1 to 5, got 9``), instead of being silently
changed or failing deep inside a run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_range", "float_range"]


def int_range(low: int, high: int | None = None, multiple_of: int = 1) -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers in ``[low, high]`` (no upper bound if ``None``).

    Args:
        low: smallest allowed value.
        high: largest allowed value, or ``None``.
        multiple_of: values must be multiples of this.
    """
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"
    rule = f"a whole number {span}" + (f", a multiple of {multiple_of}" if multiple_of > 1 else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if value < low or (high is not None and value > high) or value % multiple_of:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


def float_range(low: float, high: float, include_high: bool = True) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite numbers in ``[low, high]`` (or ``[low, high)``)."""
    rule = f"a number from {low:g} to {high:g}" + ("" if include_high else " (excluded)")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if not (low <= value <= high) or (value == high and not include_high):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse
