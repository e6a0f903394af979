"""``python -m napari_uspmie``: see :mod:`napari_uspmie.cli.main`."""

from napari_uspmie.cli.main import main

raise SystemExit(main())
