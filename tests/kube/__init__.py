"""A protocol-faithful fake Kubernetes API server for tests (see README.md here).

``FakeApiServer`` serves the Kubernetes REST API over HTTP/1.1 on loopback to the real
``kubernetes`` client and the real ``kubectl``; ``tests.kube.plugin`` has its pytest
fixtures.
"""

from tests.kube.fake_apiserver import FakeApiError, FakeApiServer

__all__ = ["FakeApiError", "FakeApiServer"]
