"""Image geometry <-> napari layer transforms.

The readers give volumes slices first, ``(k, i, j)``, with a 4x4 ``affine`` from that index
to **RAS** millimetres (:mod:`napari_uspmie.io.readers`). napari shows the last two world axes
with the vertical axis pointing down, so the plugin's world coordinates are DICOM patient
coordinates (**LPS**, mm) in reversed order, ``(z, y, x)``: an axial slice then appears in
the radiological convention (anterior up, the patient's right on the screen's left) for
DICOM and NIfTI alike, and an axis-aligned DICOM series gets an identity rotation.

The transform is split as napari composes it, ``world = affine(scale * index + translate)``:
``scale`` is the voxel spacing, ``translate`` the world position of the first voxel, and
``affine`` the direction cosines (a rotation/flip about that first voxel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RAS_TO_WORLD", "napari_geometry", "layer_index_to_world", "layer_to_ras_affine"]

#: RAS (x, y, z) -> napari world (z, y, x) in LPS: negate x and y, then reverse the axes.
RAS_TO_WORLD = np.array([[0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def napari_geometry(meta: dict, spatial_ndim: int) -> dict[str, Any]:
    """Layer keyword arguments (``scale``, ``translate``, ``affine``, ``units``) for an image read
    by :func:`napari_uspmie.io.readers.read_image`.

    Args:
        meta: the reader's metadata (``spacing``; ``affine`` for NIfTI/DICOM, else ``None``).
        spatial_ndim: 2 or 3, the spatial dimensions of the array (colour axis excluded).

    Returns:
        Keyword arguments for ``viewer.add_image``. Volumes with an affine get the full
        world placement; 2D images (plain or a single DICOM slice) get the pixel spacing
        as ``scale`` only, since an oblique plane has no place in a 2D world (the slice's
        3D affine stays in the metadata).
    """
    spacing = tuple(float(s) for s in meta.get("spacing") or (1.0,) * spatial_ndim)[-spatial_ndim:]
    medical = meta.get("format") in ("nifti", "dicom", "dicom-series")
    units = ("mm",) * spatial_ndim if medical else ("pixel",) * spatial_ndim
    affine = meta.get("affine")
    if affine is None or spatial_ndim != 3:
        return {"scale": spacing, "units": units}
    world = RAS_TO_WORLD @ np.asarray(affine, dtype=float)
    linear, origin = world[:3, :3], world[:3, 3]
    scale = np.linalg.norm(linear, axis=0)
    direction = linear / scale
    rotation = np.eye(4)
    rotation[:3, :3] = direction
    # rotate about the first voxel, so that ``translate`` is exactly its world position
    rotation[:3, 3] = origin - direction @ origin
    return {
        "scale": tuple(float(s) for s in scale),
        "translate": tuple(float(t) for t in origin),
        "affine": rotation,
        "units": units,
        "axis_labels": ("z", "y", "x"),
    }


def layer_index_to_world(state: dict[str, Any], ndim: int) -> np.ndarray:
    """A layer's full data -> world transform as an ``(ndim + 1, ndim + 1)`` matrix.

    Args:
        state: the layer's state (``layer.as_layer_data_tuple()[1]``, which napari also hands
            to writers): ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``.
        ndim: the layer's dimensions (spatial only; RGB channels excluded).
    """
    from napari.utils.transforms import CompositeAffine

    physical = CompositeAffine(
        scale=state.get("scale", (1.0,) * ndim),
        translate=state.get("translate", (0.0,) * ndim),
        rotate=state.get("rotate"),
        shear=state.get("shear"),
        ndim=ndim,
    )
    affine = state.get("affine")
    world = np.eye(ndim + 1) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
    # napari applies the layer's scale/translate/rotate/shear first, then its affine
    return world @ physical.affine_matrix


def layer_to_ras_affine(state: dict[str, Any], ndim: int) -> np.ndarray:
    """Inverse of :func:`napari_geometry`: the RAS 4x4 affine of a layer's index ``(k, i, j)``.

    A 2D layer is taken as slice ``k = 0`` of a volume with 1 mm slices.

    Args:
        state, ndim: as for :func:`layer_index_to_world`.

    Raises:
        ValueError: ``ndim`` is not 2 or 3.
    """
    if ndim not in (2, 3):
        raise ValueError(f"an image with {ndim} dimensions has no RAS affine; only 2D and 3D images do.")
    matrix = layer_index_to_world(state, ndim)
    if ndim == 2:
        full = np.eye(4)
        full[1:3, 1:3] = matrix[:2, :2]
        full[1:3, 3] = matrix[:2, 2]
        matrix = full
    return np.linalg.inv(RAS_TO_WORLD) @ matrix
