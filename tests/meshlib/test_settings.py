"""MeshSettings: one frozen value, checked when made; Mesh(...) keywords are its fields."""

from __future__ import annotations

import dataclasses

import pytest

import meshlib
from meshlib import MeshSettings


def test_settings_are_frozen_checked_and_keyword_only():
    settings = MeshSettings(xds_address="cp:15010", service="cart", namespace="shop")
    assert settings.node.startswith("cart-")  # <service>-<hostname>-<pid>
    assert settings.resolve_timeout == meshlib.DEFAULT_RESOLVE_TIMEOUT
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.service = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        MeshSettings("cp:15010")  # type: ignore[misc]
    with pytest.raises(meshlib.MeshError, match="xds_address"):
        MeshSettings(xds_address="")
    with pytest.raises(meshlib.MeshError, match="xds_protocol"):
        MeshSettings(xds_address="cp:1", xds_protocol="v2")  # type: ignore[arg-type]
    with pytest.raises(meshlib.MeshError, match="resolve_timeout"):
        MeshSettings(xds_address="cp:1", resolve_timeout=-1)


def test_the_token_never_shows_in_repr():
    assert "s3cret" not in repr(MeshSettings(xds_address="cp:1", token="s3cret"))


def test_from_env_with_overrides_and_replace():
    settings = MeshSettings.from_env({"MESHLIB_XDS_ADDRESS": "cp:1", "MESHLIB_SERVICE": "a",
                                      "MESHLIB_TELEMETRY": "off"}, service="b")
    assert (settings.xds_address, settings.service, settings.telemetry) == ("cp:1", "b", False)
    assert settings.replace(namespace="shop").namespace == "shop"
    assert settings.namespace == "default"


def test_a_mesh_takes_settings_or_the_same_keywords():
    with meshlib.Mesh(settings=MeshSettings(xds_address="127.0.0.1:1", service="cart",
                                            resolve_timeout=0.1)) as mesh:
        assert (mesh.service, mesh.resolve_timeout) == ("cart", 0.1)
        assert mesh.settings.xds_address == "127.0.0.1:1"
    with meshlib.Mesh("127.0.0.1:1", service="cart", node_id="n", sleep=None) as mesh:
        assert (mesh.node_id, mesh.settings.sleep) == ("n", MeshSettings(
            xds_address="x").sleep)  # None: the default
    with meshlib.Mesh(settings=MeshSettings(xds_address="127.0.0.1:1"),
                      service="override") as mesh:
        assert mesh.service == "override"
    with pytest.raises(TypeError, match="no_such"):
        meshlib.Mesh("127.0.0.1:1", no_such=1)
