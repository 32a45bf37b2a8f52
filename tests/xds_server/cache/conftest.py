"""Make the shared builders in ``tests/xds_server/xds_test_resources.py`` importable."""

import sys
from pathlib import Path

_SHARED = str(Path(__file__).resolve().parents[1])
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)
