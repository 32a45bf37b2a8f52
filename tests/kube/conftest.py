"""The fake API server's fixtures (tests.kube.plugin) for the tests here."""

from tests.kube.plugin import fake_kube, kube_client, kubeconfig, kubectl

__all__ = ["fake_kube", "kube_client", "kubeconfig", "kubectl"]
