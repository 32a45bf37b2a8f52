"""pytest fixtures for the fake Kubernetes API server.

Inside ``tests/kube`` they are active through its conftest; elsewhere, import them
into a conftest (``from tests.kube.plugin import fake_kube, kubeconfig, kubectl,
kube_client``) or list ``"tests.kube.plugin"`` in the root conftest's
``pytest_plugins``.

- ``fake_kube``: a started :class:`FakeApiServer` (namespaces default, kube-system,
  kube-public, kube-node-lease), stopped at teardown;
- ``kubeconfig``: a kubeconfig file for it (current namespace "default");
- ``kubectl``: the real kubectl bound to that kubeconfig (:class:`Kubectl`);
- ``kube_client``: a ``kubernetes.client.ApiClient`` for it, closed at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube.fake_apiserver import FakeApiServer
from tests.kube.kubectl import Kubectl

__all__ = ["fake_kube", "kube_client", "kubeconfig", "kubectl"]


@pytest.fixture
def fake_kube() -> Iterator[FakeApiServer]:
    with FakeApiServer() as kube:
        yield kube


@pytest.fixture
def kubeconfig(fake_kube: FakeApiServer, tmp_path: Path) -> Path:
    return fake_kube.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kubectl-cache")


@pytest.fixture
def kube_client(fake_kube: FakeApiServer) -> Iterator[Any]:
    client = fake_kube.api_client()
    try:
        yield client
    finally:
        client.close()
