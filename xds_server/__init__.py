"""meshlib's control plane: Kubernetes-shaped config in, xDS v3 over ADS out.

Layers (see docs/architecture.md): ``sources`` build a :class:`~xds_server.model.MeshModel`;
``translate`` turns it into xDS resources per node group (pure); ``cache`` keeps
versioned snapshots and watches; ``server`` speaks ADS (state of the world and delta).
"""

__all__: list[str] = []
