"""A MONAI Label inference task that serves the bundle's enhancer as an image-to-image model.

MONAI Label's generic ``BundleInferTask`` treats every bundle as a segmentation model: it reports
the output's channel as a label, a 2D model as dimension 2, and lets a result be saved back to the
datastore as a label (over DICOMweb, as a DICOM SEG with one segment per grey level). This task
keeps MONAI Label's bundle machinery (the bundle's own pre- and postprocessing, inferer and
weights) and changes what the result is:

* type ``others``, no labels, dimension 3 (volumes are enhanced slice by slice);
* the result is the enhanced image in the input's geometry and dtype, never a label map; a request
  to save it as a label (``save_label``) is turned off, and a DICOM SEG request (``label_info``)
  is refused with an explanation.

Importing this module needs MONAI Label; nothing else in the package imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

__all__ = ["RESULT_KIND", "EnhancementInferTask"]

RESULT_KIND = "enhanced image (same geometry and dtype as the input; not a label map)"


class EnhancementInferTask(BundleInferTask):
    """The bundle at ``path`` served as an enhancer.

    Args:
        path: bundle folder (``configs/inference.json``, ``models/model.pt`` or ``models/model.ts``).
        conf: MONAI Label app configuration (``preload`` etc.).
        **kwargs: passed to ``BundleInferTask``.
    """

    def __init__(self, path: str | os.PathLike, conf: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(str(path), conf or {}, type=InferType.OTHERS, **kwargs)
        self.labels: dict[str, int] = {}  # no label names: the result is an image
        self.dimension = 3
        self.description = "Structure-preserving enhancement (LaMEGAN); returns an enhanced image, not labels."

    def info(self) -> dict[str, Any]:
        return {**super().info(), "output": RESULT_KIND}

    def __call__(
        self, request: dict[str, Any], callbacks: dict[Any, Callable] | None = None
    ) -> tuple[str | None, dict[str, Any]]:
        """Enhance ``request["image"]``; the app reads ``save_label`` after this returns, so it is cleared here.

        Raises:
            MONAILabelException: a DICOM SEG result was asked for (``label_info``).
        """
        if request.get("label_info") is not None:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "this model returns an enhanced image, not a segmentation: request output=image, not dicom_seg.",
            )
        request["save_label"] = False  # the same dict the app consults after the call
        image = request.get("image")
        if not request.get("result_extension") and isinstance(image, str) and os.path.isdir(image):
            # a DICOM series folder has no extension for MONAI Label's writer to copy: it would
            # hand back an array instead of a file
            request["result_extension"] = ".nii.gz"
        result_file, params = super().__call__(request, callbacks)
        return result_file, {**params, "result": RESULT_KIND, "saved_as_label": False}
