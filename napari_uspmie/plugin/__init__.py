"""The napari plugin: reader, writers, sample data and dock widgets (``napari.yaml`` lives here).

Qt and napari are imported by these modules only; the rest of the package never imports them.
"""
