"""Glue between the MONAI bundle's configs and the package: location, transforms, case lists."""

from napari_uspmie.bundle.location import bundle_path

__all__ = ["bundle_path"]
