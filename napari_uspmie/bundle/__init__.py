"""Glue between the MONAI bundle's configs and the package: bundle root, transforms, case lists."""
