"""Command line: ``python -m napari_uspmie COMMAND ...`` (also installed as ``napari-uspmie``)."""
