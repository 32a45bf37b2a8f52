"""meshlib: a proxyless service mesh for Python.

The client library (``Mesh``, channels, decorators) arrives with its issue; for now
the package holds the error hierarchy shared with the control plane.
"""

from meshlib.errors import ConfigError, InconsistentSnapshotError, MeshError, Problem, XdsError

__all__ = ["ConfigError", "InconsistentSnapshotError", "MeshError", "Problem", "XdsError"]
__version__ = "0.1.0"
