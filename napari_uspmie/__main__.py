"""``python -m napari_uspmie``: see :mod:`napari_uspmie.cli`."""

from napari_uspmie.cli import main

raise SystemExit(main())
