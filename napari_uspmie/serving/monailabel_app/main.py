"""A MONAI Label app serving the napari-uspmie enhancer (no trainer, no downloads).

Start it offline on this machine only::

    monailabel start_server --app "$(python -c 'import napari_uspmie.serving, os; \
        print(os.path.join(os.path.dirname(napari_uspmie.serving.__file__), "monailabel_app"))')" \
        --studies /path/to/images --host 127.0.0.1 --port 8000 --conf preload false

``--conf bundle DIR`` serves another bundle folder (default: the one installed with the package).
Over DICOMweb (``--studies http://host/dicom-web``) MONAI Label lists only series matching
``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, CT by default: set it to ``'{"Modality": "MR"}'`` for MR.
Training is not offered: MONAI Label's trainers pair images with labels, while LaMEGAN trains on
two unpaired folders; use the bundle's ``configs/train.json``.
"""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.app import MONAILabelApp

from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.serving.monailabel_task import EnhancementInferTask

MODEL_NAME = "lamegan_enhancement"


class EnhancementApp(MONAILabelApp):
    """One inference task, :data:`MODEL_NAME`, over the bundle given by ``--conf bundle`` or the installed one."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, Any]) -> None:
        self.bundle = conf.get("bundle") or str(bundle_path())
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="napari-uspmie enhancement",
            description="LaMEGAN structure-preserving enhancement served as an image-to-image model",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, Any]:
        return {MODEL_NAME: EnhancementInferTask(self.bundle, self.conf)}

    def init_trainers(self) -> dict[str, Any]:
        return {}

    def _download_dcmqi_tools(self) -> None:
        """MONAI Label fetches dcmqi (label map -> DICOM SEG) from GitHub when it opens a DICOMweb
        datastore; this app never writes a segmentation, so it needs no tool and works offline."""
