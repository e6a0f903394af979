"""Files in and out: PNG/TIFF/NIfTI/DICOM readers with geometry, writers "like" the input, figures.

Nothing here imports torch: opening or saving a file in napari stays light.
"""
