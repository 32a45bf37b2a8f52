"""``MeshChannel``: a ``grpc.Channel`` that routes, balances and retries in-process.

Generated stubs take it unchanged. It is the grpc sync driver of the one call
pipeline (:mod:`meshlib._pipeline`): per call it builds a :class:`~meshlib._pipeline.Call`
from the target's current :class:`~meshlib._route_table.RouteTable` (one attribute
load; updates swap it), then only sends attempts to the endpoints the call picks and
sleeps the waits it asks for.

Streaming: a server-streaming call is retried only until its first response message
arrives. Calls that stream requests are not retried (their requests cannot be
replayed), nor are ``future()`` calls: they make one attempt, still balanced,
limited and counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from meshlib._cluster_state import EndpointState
from meshlib._pipeline import Call, byte_counting, count_raw, resolve_failure
from meshlib._route_table import Metadata, RouteTable
from meshlib.errors import status_code

if TYPE_CHECKING:
    from meshlib._clients import Clients
    from meshlib._resolver import Target

__all__ = ["MeshChannel"]

_MAX_CACHED = 1024


def _ended(call: Call, endpoint: EndpointState, rpc: Any) -> Callable[[Any], None]:
    """The done callback of a sync streaming or ``future`` attempt."""
    return lambda done: call.stream_ended(endpoint, done.code())


class _Base:
    __slots__ = ("__weakref__", "_bytes", "_cache", "_clients", "_clock", "_deser", "_method",
                 "_ser", "_target", "_telemetry")

    def __init__(self, channel: MeshChannel, method: str, ser: Any, deser: Any) -> None:
        clients = self._clients = channel._clients
        self._telemetry = clients.telemetry
        self._clock = clients.settings.clock
        self._target = channel._target
        self._method = method
        ser, deser, self._bytes = byte_counting(clients.telemetry, channel._target.name, method,
                                                self._kind, ser, deser)
        self._ser = ser
        self._deser = deser
        self._cache: dict[EndpointState, Any] = {}
        clients.tracker.track(self)

    def _wait_table(self, timeout: float | None) -> RouteTable:
        """The target's first table, waited for (at most ``resolve_timeout``)."""
        wait = self._clients.settings.resolve_timeout
        if timeout is not None and timeout < wait:
            wait = timeout
        self._target.ready.wait(wait)
        table = self._target.table
        if table is None:
            raise resolve_failure(self._target, wait, self._clients.settings.xds_address)
        return table

    def _callable(self, endpoint: EndpointState) -> Any:
        cache = self._cache  # before the pool: a rotation meanwhile drops this dict
        if len(cache) > _MAX_CACHED:
            cache.clear()
        made = getattr(self._clients.pool.get(endpoint.address, endpoint.server_name),
                       self._kind)(self._method, request_serializer=self._ser,
                                   response_deserializer=self._deser, _registered_method=True)
        cache[endpoint] = made
        return made

    _kind = ""  # the grpc.Channel method that makes this kind of multicallable

    def _call(self, timeout: float | None, metadata: Metadata, retry: bool = True) -> Call:
        """Route and start; wait out an injected delay, raise an injected abort."""
        table = self._target.table
        if table is None:
            table = self._wait_table(timeout)
        call = Call(table, self._method, metadata, timeout, self._telemetry, self._method,
                    self._clock, retry)
        if call.delay:
            self._clients.settings.sleep(call.delay)
            call.start()
        if call.aborted is not None:
            raise call.aborted
        return call


class _UnaryUnary(_Base, grpc.UnaryUnaryMultiCallable):
    __slots__ = ()

    _kind = "unary_unary"

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                 credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None, compression: grpc.Compression | None = None
                 ) -> Any:
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready,
                            compression, False)

    def with_call(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                  credentials: grpc.CallCredentials | None = None,
                  wait_for_ready: bool | None = None,
                  compression: grpc.Compression | None = None) -> tuple[Any, grpc.Call]:
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready,
                            compression, True)

    def future(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
               credentials: grpc.CallCredentials | None = None,
               wait_for_ready: bool | None = None,
               compression: grpc.Compression | None = None) -> grpc.Future:
        call = self._call(timeout, metadata, retry=False)

        def start(endpoint: EndpointState) -> grpc.Future:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            return multi.future(request, timeout=call.attempt_timeout,
                                metadata=call.attempt_headers, credentials=credentials,
                                wait_for_ready=wait_for_ready, compression=compression)

        return call.open(start, _ended)

    def _invoke(self, request: Any, timeout: float | None, metadata: Metadata,
                credentials: Any, wait_for_ready: bool | None, compression: Any,
                with_call: bool) -> Any:
        call = self._call(timeout, metadata)
        counters = self._bytes if call.record is not None else None
        try:
            while True:
                endpoint = call.pick()
                try:
                    multi = self._cache.get(endpoint) or self._callable(endpoint)
                    result = (multi.with_call if with_call else multi)(
                        request, timeout=call.attempt_timeout,
                        metadata=call.attempt_headers, credentials=credentials,
                        wait_for_ready=wait_for_ready, compression=compression)
                except grpc.RpcError as err:
                    if counters is not None:
                        count_raw(counters, request, None)
                    wait = call.failed_rpc(endpoint, err)
                    if wait is None:
                        call.give_up(err)
                    if wait:
                        self._clients.settings.sleep(wait)
                    continue
                except BaseException:
                    call.cancelled(endpoint)
                    raise
                call.succeeded(endpoint)
                if counters is not None:
                    count_raw(counters, request, result[0] if with_call else result)
                return result
        except BaseException as err:
            call.finish(err)
            raise


class _UnaryStream(_Base, grpc.UnaryStreamMultiCallable):
    __slots__ = ()

    _kind = "unary_stream"

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                 credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> _RetryingStream:
        call = self._call(timeout, metadata)

        def start(endpoint: EndpointState) -> Any:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            return multi(request, timeout=call.attempt_timeout, metadata=call.attempt_headers,
                         credentials=credentials, wait_for_ready=wait_for_ready,
                         compression=compression)

        return _RetryingStream(call, start, self._clients.settings.sleep)


class _RetryingStream(grpc.Call, grpc.Future, Iterator[Any]):
    """A server-streaming call that starts over on a retryable failure until its
    first response message arrives; after that, errors reach the caller."""

    def __init__(self, call: Call, start: Callable[[EndpointState], Any],
                 sleep: Callable[[float], Any]) -> None:
        self._plan = call
        self._start = start
        self._sleep = sleep
        self._call = call.open(start, _ended)
        self._received = False

    def __iter__(self) -> _RetryingStream:
        return self

    def __next__(self) -> Any:
        if self._received:
            return next(self._call)
        while True:
            try:
                message = next(self._call)
                break
            except grpc.RpcError as err:
                wait = self._plan.retry_stream(err)
                if wait is None:
                    self._plan.give_up(err)
                if wait:
                    self._sleep(wait)
                self._call = self._plan.open(self._start, _ended)
        self._received = True
        return message

    # grpc.Call / grpc.Future: the current attempt's
    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> Any:
        return self._call.code()

    def details(self) -> Any:
        return self._call.details()

    def is_active(self) -> bool:
        return self._call.is_active()

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return self._call.add_callback(callback)

    def cancel(self) -> bool:
        return self._call.cancel()

    def cancelled(self) -> bool:
        return self._call.cancelled()

    def running(self) -> bool:
        return self._call.running()

    def done(self) -> bool:
        return self._call.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._call.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _: fn(self))


class _StreamUnary(_Base, grpc.StreamUnaryMultiCallable):
    __slots__ = ()

    _kind = "stream_unary"

    def _once(self, how: str, request_iterator: Iterator[Any], timeout: float | None,
              metadata: Metadata, kwargs: dict[str, Any]) -> Any:
        call = self._call(timeout, metadata, retry=False)
        if how == "future":
            def start(endpoint: EndpointState) -> Any:
                multi = self._cache.get(endpoint) or self._callable(endpoint)
                return multi.future(request_iterator, timeout=call.attempt_timeout,
                                    metadata=call.attempt_headers, **kwargs)
            return call.open(start, _ended)
        endpoint = call.pick()
        try:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            result = getattr(multi, how)(request_iterator, timeout=call.attempt_timeout,
                                         metadata=call.attempt_headers, **kwargs)
        except grpc.RpcError as err:
            call.stream_ended(endpoint, status_code(err))
            raise
        except BaseException:
            call.stream_ended(endpoint, grpc.StatusCode.CANCELLED)
            raise
        call.stream_ended(endpoint, grpc.StatusCode.OK)
        return result

    def __call__(self, request_iterator: Iterator[Any], timeout: float | None = None,
                 metadata: Metadata = None, **kwargs: Any) -> Any:
        return self._once("__call__", request_iterator, timeout, metadata, kwargs)

    def with_call(self, request_iterator: Iterator[Any], timeout: float | None = None,
                  metadata: Metadata = None, **kwargs: Any) -> Any:
        return self._once("with_call", request_iterator, timeout, metadata, kwargs)

    def future(self, request_iterator: Iterator[Any], timeout: float | None = None,
               metadata: Metadata = None, **kwargs: Any) -> Any:
        return self._once("future", request_iterator, timeout, metadata, kwargs)


class _StreamStream(_Base, grpc.StreamStreamMultiCallable):
    __slots__ = ()

    _kind = "stream_stream"

    def __call__(self, request_iterator: Iterator[Any], timeout: float | None = None,
                 metadata: Metadata = None, **kwargs: Any) -> Any:
        call = self._call(timeout, metadata, retry=False)

        def start(endpoint: EndpointState) -> Any:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            return multi(request_iterator, timeout=call.attempt_timeout,
                         metadata=call.attempt_headers, **kwargs)

        return call.open(start, _ended)


class MeshChannel(grpc.Channel):
    """A ``grpc.Channel`` to one mesh target; get it from :meth:`meshlib.Mesh.channel`.

    Example::

        channel = mesh.channel("reviews")
        stub = reviews_pb2_grpc.ReviewsStub(channel)
        stub.Get(request, timeout=2.0)
    """

    def __init__(self, target: Target, clients: Clients) -> None:
        self._target = target
        self._clients = clients
        self._subscribers: list[Callable[[grpc.ChannelConnectivity], None]] = []

    @property
    def target(self) -> str:
        """The target this channel calls, as given."""
        return self._target.name

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, _registered_method: bool = False
                    ) -> grpc.UnaryUnaryMultiCallable:
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool = False
                     ) -> grpc.UnaryStreamMultiCallable:
        return _UnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool = False
                     ) -> grpc.StreamUnaryMultiCallable:
        return _StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, _registered_method: bool = False
                      ) -> grpc.StreamStreamMultiCallable:
        return _StreamStream(self, method, request_serializer, response_deserializer)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None],
                  try_to_connect: bool = False) -> None:
        """Connectivity as a mesh sees it: READY once the target's configuration is
        known (``grpc.channel_ready_future`` works), TRANSIENT_FAILURE if it is not in
        the mesh, else CONNECTING."""
        self._subscribers.append(callback)
        callback(self._target.connectivity())
        if not self._target.ready.is_set():
            def notify() -> None:
                self._target.ready.wait()
                if callback in self._subscribers:
                    callback(self._target.connectivity())

            threading.Thread(target=notify, daemon=True, name="meshlib-subscribe").start()

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def close(self) -> None:
        """Nothing to free per channel: endpoint channels belong to the Mesh."""

    def __enter__(self) -> MeshChannel:
        return self

    def __exit__(self, *exc: object) -> bool:
        self.close()
        return False

