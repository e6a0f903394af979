"""Option types of every command, the package CLI's and the research ones: values checked when parsed.

A bad value stops the command before any work with argparse's one-line usage error
(``argument --level: must be a whole number from 1 to 5, got 9``), instead of being silently
changed or failing deep inside a run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_range", "float_range", "MODALITY_CODES", "modality_code"]


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


#: DICOM Modality codes (PS3.3 C.7.3.1.1.1, defined terms in current use)
MODALITY_CODES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG MR "
    "M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTPLAN "
    "RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TG US VA XA XC".split()
)


def modality_code(text: str) -> str:
    """An argparse ``type`` accepting a DICOM Modality code (any case), returned upper-case."""
    code = text.strip().upper()
    if code not in MODALITY_CODES:
        raise argparse.ArgumentTypeError(
            f"must be a DICOM Modality code such as MR, CT, US, XC (endoscopy photo) or OP, got {text!r}"
        )
    return code
