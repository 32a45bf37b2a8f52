"""``meshctl``: the command line, the one place that wires both sides of the mesh.

It runs the control plane (:mod:`xds_server`), checks configuration, writes gRPC
xDS bootstraps, gets workload certificates from the mesh CA with the library's CA
client (:mod:`meshlib.security`), and runs the demo (control plane, services and
meshlib clients on one machine). It uses public names only: the control plane's
packages, ``meshlib``'s public API and :mod:`meshlib.contract`.

Run it as ``meshctl ...`` (installed by the package) or ``python -m meshctl ...``.
"""

__all__: list[str] = []
