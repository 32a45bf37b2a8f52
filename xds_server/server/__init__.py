"""How resources go on the wire: ADS (state of the world and delta) over a cache.

:class:`SotwStream` and :class:`DeltaStream` hold the protocol logic per stream,
sans-IO; :class:`AdsServer` is the ``grpc.aio`` shell; :class:`CallbackFuncs` hooks in;
:class:`StreamRegistry` shows what each connected node has.
"""

from xds_server.server.ads import AdsServer, identity_of, serve, serve_services, vouched_node
from xds_server.server.callbacks import CallbackFuncs, Callbacks, StreamProtocol
from xds_server.server.delta_protocol import DeltaStream
from xds_server.server.registry import StreamRegistry, StreamStatus, TypeStatus
from xds_server.server.sotw_protocol import SotwStream
from xds_server.server.stream_base import Outgoing, StreamRejected

__all__ = [
    "AdsServer",
    "CallbackFuncs",
    "Callbacks",
    "DeltaStream",
    "Outgoing",
    "SotwStream",
    "StreamProtocol",
    "StreamRegistry",
    "StreamRejected",
    "StreamStatus",
    "TypeStatus",
    "identity_of",
    "serve",
    "serve_services",
    "vouched_node",
]
