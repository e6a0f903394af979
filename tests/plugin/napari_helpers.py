"""Helpers shared by the napari tests."""

from __future__ import annotations


def notification_messages(seen: list, severity: str) -> list[str]:
    """Messages of the notifications in ``seen`` whose severity name ends with ``severity``."""
    return [str(n.message) for n in seen if str(n.severity).lower().endswith(severity)]
