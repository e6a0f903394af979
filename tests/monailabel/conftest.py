"""MONAI Label tests run only where MONAI Label is installed: its own environment, made by
``scripts/monailabel_check.sh`` (it pins pydicom < 3 and numpy < 2, which the main one does not)."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("monailabel") else ["test_*.py"]
