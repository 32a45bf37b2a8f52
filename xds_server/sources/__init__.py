"""Config sources: Kubernetes-shaped objects → a validated, immutable ``MeshModel``.

* :func:`parse_objects` — pure: ``(source, dict)`` pairs in, the model and every
  problem out. The YAML loader feeds it today; a Kubernetes source (list/watch of
  the same objects) will feed it the same way, so both build the same model.
* :func:`load_model`, :func:`check`, :func:`load_documents` — the same from YAML
  files or a directory of them.

Example::

    from xds_server.sources import check, load_model

    model = load_model("examples/mesh")
    for problem in check("examples/invalid"):
        print(problem)   # examples/invalid/routes.yaml: GRPCRoute default/x: spec...: ...
"""

from xds_server.sources.durations import parse_duration
from xds_server.sources.parse import SUPPORTED_KINDS, parse_objects
from xds_server.sources.parse_core import derive_protocol
from xds_server.sources.parse_routes import grpc_method_path
from xds_server.sources.yaml_loader import check, load_documents, load_model, read_documents

__all__ = [
    "SUPPORTED_KINDS",
    "check",
    "derive_protocol",
    "grpc_method_path",
    "load_documents",
    "load_model",
    "parse_duration",
    "parse_objects",
    "read_documents",
]
