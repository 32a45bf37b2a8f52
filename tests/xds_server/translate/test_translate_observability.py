"""MeshConfig tracing and access logs → every HttpConnectionManager, in Envoy's fields,
and meshlib's reading of them back."""

from __future__ import annotations

import pytest
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import any_pb2, json_format

from meshlib.xds._listener import DEFAULT_SAMPLING, decode_listener
from tests.xds_server.translate.model_builders import endpoint, endpoint_slice, mesh, service
from tests.xds_server.translate.reference_check import hcm_of
from xds_server.model import MeshConfig
from xds_server.node import NodeGroup
from xds_server.resources import LISTENER
from xds_server.translate import build_resources
from xds_server.translate.listeners import ENVOY_ACCESS_LOG_FORMAT


def _listeners(mesh_config: MeshConfig, kind: str = "grpc") -> dict:
    svc = service("reviews")
    model = mesh(svc, endpoint_slice(svc, endpoint("10.0.0.1")), mesh_config=mesh_config)
    group = NodeGroup(kind=kind, outbound_port=15001) if kind == "envoy" else \
        NodeGroup(kind=kind)
    return build_resources(model, group)[LISTENER]


def _decoded(listener) -> object:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(listener)
    return decode_listener(packed)


@pytest.mark.parametrize("kind", ["grpc", "envoy"])
def test_sampling_and_access_logs_go_on_every_hcm(kind):
    listeners = _listeners(MeshConfig(tracing_sampling=0.25, access_logs=True), kind)
    assert listeners
    for listener in listeners.values():
        hcm = hcm_of(listener)
        assert hcm.tracing.random_sampling.value == 25.0
        (log,) = hcm.access_log
        stdout = stream_pb2.StdoutAccessLog()
        assert log.typed_config.Unpack(stdout)
        fields = json_format.MessageToDict(stdout.log_format.json_format)
        assert fields == ENVOY_ACCESS_LOG_FORMAT


def test_access_logs_are_off_by_default_and_sampling_is_one_percent():
    for listener in _listeners(MeshConfig()).values():
        hcm = hcm_of(listener)
        assert not hcm.access_log
        assert hcm.tracing.random_sampling.value == 1.0


def test_meshlib_reads_both_back_from_client_and_server_listeners():
    listeners = _listeners(MeshConfig(tracing_sampling=0.25, access_logs=True))
    kinds = set()
    for listener in listeners.values():
        update = _decoded(listener)
        kinds.add(type(update).__name__)
        assert update.tracing_sampling == pytest.approx(0.25)  # type: ignore[attr-defined]
        assert update.access_log is True  # type: ignore[attr-defined]
    assert kinds == {"ListenerUpdate", "ServerListenerUpdate"}


def test_a_listener_without_tracing_means_the_default_share():
    listeners = _listeners(MeshConfig())
    listener = next(iter(listeners.values()))
    hcm = hcm_of(listener)
    hcm.ClearField("tracing")
    listener.api_listener.api_listener.Pack(hcm) if listener.HasField("api_listener") else \
        listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
    assert _decoded(listener).tracing_sampling == DEFAULT_SAMPLING  # type: ignore[attr-defined]
