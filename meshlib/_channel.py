"""``MeshChannel``: a ``grpc.Channel`` that routes, balances and retries in-process.

Generated stubs take it unchanged. Per call: route (method, headers) → weighted
cluster → endpoint (picker, breaker, limits) → the endpoint's shared channel; failures
feed outlier detection and the breaker, and retryable ones are retried (tenacity)
within the retry budget. Configuration is read from one immutable
:class:`~meshlib._route_table.RouteTable` per call; updates swap it.

Streaming: a server-streaming call is retried only until its first response message
arrives. Calls that stream requests are not retried (their requests cannot be
replayed), nor are ``future()`` calls: they make one attempt, still balanced,
limited and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from meshlib._attempts import (
    after_delay,
    attempt_timeout,
    call_timeout,
    fault_abort,
    fault_delay,
    retry_after,
    retryable,
    rpc_code,
)
from meshlib._call_context import RETRIES_OWNED
from meshlib._cluster_state import ClusterState, EndpointState
from meshlib._pool import ChannelPool
from meshlib._resolver import Target
from meshlib._route_table import Metadata, RouteEntry, RouteTable
from meshlib.errors import CallError, NoHealthyEndpointError, ServiceNotFoundError
from meshlib.telemetry._client import ClientTelemetry, Record
from meshlib.telemetry._metrics import counting_codec

__all__ = ["MeshChannel", "byte_counting", "code_name", "count_raw", "finish_stream",
           "resolve_failure"]

_monotonic = time.monotonic
_CANCELLED = grpc.StatusCode.CANCELLED
_MAX_CACHED = 1024


def resolve_failure(target: Target, waited: float, xds_address: str) -> CallError:
    """The error for a call whose target has no table after waiting ``waited`` s."""
    if target.status == "not_found":
        return ServiceNotFoundError(
            f"{target.name}: no such service in the mesh ({target.error}); check the "
            "name, the namespace, and the Service object", service=target.name)
    why = target.error or f"no configuration from the control plane at {xds_address} " \
                          f"within {waited:.1f}s"
    return NoHealthyEndpointError(f"{target.name}: {why}", service=target.name)


def _done_releaser(cluster: ClusterState, endpoint: EndpointState,
                   record: Record | None = None) -> Callable[[grpc.Future], None]:
    def done(call: Any) -> None:
        code = call.code()
        cluster.release(endpoint, None if code is grpc.StatusCode.OK else code)
        if record is not None:
            finish_stream(record, code)
    return done


def finish_stream(record: Record, code: grpc.StatusCode | None) -> None:
    """A streaming (or ``future``) attempt ended: it is the call's one attempt."""
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    error = code is not grpc.StatusCode.OK
    record.attempt_end(name, error)
    record.finish(name, error)


def byte_counting(telemetry: ClientTelemetry | None, target: str, method: str, kind: str,
                  ser: Any, deser: Any) -> tuple[Any, Any, tuple[Any, Any] | None]:
    """A multicallable's (serializer, deserializer, inline counters): raw-bytes unary
    calls are counted inline (:func:`count_raw`: no serializer callback into Python);
    the others through counting (de)serializers."""
    if telemetry is None:
        return ser, deser, None
    counters = telemetry.metrics.byte_counters("client", target, method)
    if ser is None and deser is None and kind == "unary_unary":
        return ser, deser, counters
    return (*counting_codec(ser, deser, *counters), None)


def count_raw(counters: tuple[Any, Any] | None, request: Any, response: Any) -> None:
    """Count a raw-bytes unary attempt's sizes (``counters`` is None when the
    serializers count instead)."""
    if counters is not None:
        if isinstance(request, bytes):
            counters[0](len(request))
        if isinstance(response, bytes):
            counters[1](len(response))


_count = count_raw


def code_name(error: BaseException | None) -> str:
    """The gRPC code name of a call's outcome (None: OK)."""
    if error is None:
        return "OK"
    code = rpc_code(error)
    return code.name if code is not None else "CANCELLED"


def _releaser(record: Record | None
              ) -> Callable[[ClusterState, EndpointState], Callable[[grpc.Future], None]]:
    if record is None:
        return _done_releaser
    return lambda cluster, endpoint: _done_releaser(cluster, endpoint, record)


class _Base:
    __slots__ = ("__weakref__", "_bytes", "_cache", "_channel", "_deser", "_method", "_ser",
                 "_target")

    def __init__(self, channel: MeshChannel, method: str, ser: Any, deser: Any) -> None:
        self._channel = channel
        self._target = channel._target
        self._method = method
        telemetry = channel._telemetry
        ser, deser, self._bytes = byte_counting(telemetry, channel._target.name, method,
                                                self._kind, ser, deser)
        self._ser = ser
        self._deser = deser
        self._cache: dict[EndpointState, Any] = {}
        channel._pool.tracker.track(self)

    def _table(self, timeout: float | None) -> RouteTable:
        table = self._target.table
        if table is not None:
            return table
        wait = self._channel._resolve_timeout
        if timeout is not None and timeout < wait:
            wait = timeout
        self._target.ready.wait(wait)
        table = self._target.table
        if table is None:
            raise resolve_failure(self._target, wait, self._channel._xds_address)
        return table

    def _callable(self, endpoint: EndpointState) -> Any:
        cache = self._cache  # before the pool: a rotation meanwhile drops this dict
        if len(cache) > _MAX_CACHED:
            cache.clear()
        channel = self._channel._pool.get(endpoint.address, endpoint.server_name)
        made = self._make(channel)
        cache[endpoint] = made
        return made

    _kind = ""  # the grpc.Channel method that makes this kind of multicallable

    def _make(self, channel: grpc.Channel) -> Any:
        return getattr(channel, self._kind)(self._method, request_serializer=self._ser,
                                            response_deserializer=self._deser,
                                            _registered_method=True)

    def _start(self, timeout: float | None, metadata: Metadata
               ) -> tuple[RouteEntry, ClusterState, float | None, Record | None]:
        """Route, apply faults, pick the cluster: everything before the first pick;
        and the call's telemetry record (None with telemetry off)."""
        table = self._table(timeout)
        entry = table.route(self._method, metadata)
        timeout = call_timeout(timeout, entry.timeout, self._target.name)
        fault = entry.fault
        if fault is not None:
            delay = fault_delay(fault)
            if delay:
                time.sleep(delay)
                timeout = after_delay(timeout, delay, self._target.name)
            error = fault_abort(fault, self._target.name)
            if error is not None:
                raise error
        cluster = entry.pick_cluster()
        cluster.budget.record_request()
        telemetry = self._channel._telemetry
        if telemetry is None:
            return entry, cluster, timeout, None
        return entry, cluster, timeout, telemetry.start(
            table.target, entry.route.name, cluster.service, self._method, metadata,
            table.sampling, table.access_log)


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
        entry, cluster, timeout, record = self._start(timeout, metadata)

        def start(endpoint: EndpointState) -> grpc.Future:
            call = self._cache.get(endpoint) or self._callable(endpoint)
            sent = metadata if record is None else record.attempt(endpoint)
            return call.future(request, timeout=timeout, metadata=sent,
                               credentials=credentials, wait_for_ready=wait_for_ready,
                               compression=compression)

        return cluster.start_call(entry.hash_key(metadata) if entry.hash_headers else None,
                                  start, _releaser(record))

    def _invoke(self, request: Any, timeout: float | None, metadata: Metadata,
                credentials: Any, wait_for_ready: bool | None, compression: Any,
                with_call: bool) -> Any:
        entry, cluster, timeout, record = self._start(timeout, metadata)
        if record is None:
            return self._attempts(entry, cluster, timeout, request, metadata, credentials,
                                  wait_for_ready, compression, with_call, None)
        try:
            result = self._attempts(entry, cluster, timeout, request, metadata, credentials,
                                    wait_for_ready, compression, with_call, record)
        except BaseException as err:
            record.finish(code_name(err), True)
            raise
        record.finish("OK", False)
        return result

    def _attempts(self, entry: RouteEntry, cluster: ClusterState, timeout: float | None,
                  request: Any, metadata: Metadata, credentials: Any,
                  wait_for_ready: bool | None, compression: Any, with_call: bool,
                  record: Record | None) -> Any:
        retry = entry.retry
        deadline = None
        if retry is not None:
            if RETRIES_OWNED.get():
                retry = None
            else:
                deadline = None if timeout is None else _monotonic() + timeout
                if retry.per_try_timeout is not None:
                    timeout = attempt_timeout(retry.per_try_timeout, deadline)
        hash_key = entry.hash_key(metadata) if entry.hash_headers else None
        options = (metadata, credentials, wait_for_ready, compression, with_call, record)
        try:
            return self._once(cluster, hash_key, request, timeout, options)
        except grpc.RpcError as err:
            if not retryable(err, retry):
                raise
            first = err

        def again() -> Any:
            timeout = attempt_timeout(retry.per_try_timeout, deadline)
            return self._once(cluster, hash_key, request, timeout, options)

        return retry_after(first, again, retry, cluster, deadline, self._channel._sleep)

    def _once(self, cluster: ClusterState, hash_key: str | None, request: Any,
              timeout: float | None, options: tuple[Any, ...]) -> Any:
        """One attempt: pick an endpoint, call it, report the outcome."""
        metadata, credentials, wait_for_ready, compression, with_call, record = options
        endpoint = cluster.pick(hash_key)
        if record is not None:
            metadata = record.attempt(endpoint)
        try:
            call = self._cache.get(endpoint) or self._callable(endpoint)
            result = (call.with_call if with_call else call)(
                request, timeout=timeout, metadata=metadata, credentials=credentials,
                wait_for_ready=wait_for_ready, compression=compression)
        except grpc.RpcError as err:
            code = rpc_code(err)
            cluster.release(endpoint, code, err)
            if record is not None:
                record.attempt_end(code.name if code else "UNKNOWN", True)
                _count(self._bytes, request, None)
            raise
        except BaseException:
            cluster.release(endpoint, _CANCELLED)
            if record is not None:
                record.attempt_end("CANCELLED", True)
            raise
        cluster.release(endpoint, None)
        if record is not None:
            record.attempt_end("OK", False)
            _count(self._bytes, request, result[0] if with_call else result)
        return result


class _UnaryStream(_Base, grpc.UnaryStreamMultiCallable):
    __slots__ = ()

    _kind = "unary_stream"

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata = None,
                 credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> _RetryingStream:
        entry, cluster, timeout, record = self._start(timeout, metadata)
        retry = None if RETRIES_OWNED.get() else entry.retry
        deadline = None if timeout is None else _monotonic() + timeout

        per_try = retry.per_try_timeout if retry is not None else None
        hash_key = entry.hash_key(metadata) if entry.hash_headers else None

        def start_on(endpoint: EndpointState) -> Any:
            call = self._cache.get(endpoint) or self._callable(endpoint)
            sent = metadata if record is None else record.attempt(endpoint)
            return call(request, timeout=attempt_timeout(per_try, deadline),
                        metadata=sent, credentials=credentials,
                        wait_for_ready=wait_for_ready, compression=compression)

        def start() -> Any:
            return cluster.start_call(hash_key, start_on, _releaser(record))

        return _RetryingStream(start, retry, cluster, deadline, self._channel._sleep)


class _RetryingStream(grpc.Call, grpc.Future, Iterator[Any]):
    """A server-streaming call that starts over on a retryable failure until its
    first response message arrives; after that, errors reach the caller."""

    def __init__(self, start: Callable[[], Any], retry: Any, cluster: ClusterState,
                 deadline: float | None, sleep: Callable[[float], Any] | None) -> None:
        self._start = start
        self._retry = retry
        self._cluster = cluster
        self._deadline = deadline
        self._sleep = sleep
        self._call = start()
        self._received = False

    def __iter__(self) -> _RetryingStream:
        return self

    def __next__(self) -> Any:
        if self._received:
            return next(self._call)
        try:
            message = next(self._call)
        except grpc.RpcError as err:
            if not retryable(err, self._retry):
                raise
            message = self._first_by_retrying(err)
        self._received = True
        return message

    def _first_by_retrying(self, first: BaseException) -> Any:
        def again() -> Any:
            self._call = self._start()
            return next(self._call)

        return retry_after(first, again, self._retry, self._cluster, self._deadline,
                           self._sleep)

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
        entry, cluster, timeout, record = self._start(timeout, metadata)
        endpoint = cluster.pick(entry.hash_key(metadata) if entry.hash_headers else None)
        sent = metadata if record is None else record.attempt(endpoint)
        try:
            call = self._cache.get(endpoint) or self._callable(endpoint)
            result = getattr(call, how)(request_iterator, timeout=timeout, metadata=sent,
                                        **kwargs)
        except grpc.RpcError as err:
            cluster.release(endpoint, rpc_code(err), err)
            if record is not None:
                finish_stream(record, rpc_code(err))
            raise
        except BaseException:
            cluster.release(endpoint, _CANCELLED)
            if record is not None:
                finish_stream(record, _CANCELLED)
            raise
        if how == "future":
            result.add_done_callback(_done_releaser(cluster, endpoint, record))
        else:
            cluster.release(endpoint, None)
            if record is not None:
                finish_stream(record, grpc.StatusCode.OK)
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
        entry, cluster, timeout, record = self._start(timeout, metadata)

        def start(endpoint: EndpointState) -> Any:
            call = self._cache.get(endpoint) or self._callable(endpoint)
            sent = metadata if record is None else record.attempt(endpoint)
            return call(request_iterator, timeout=timeout, metadata=sent, **kwargs)

        return cluster.start_call(entry.hash_key(metadata) if entry.hash_headers else None,
                                  start, _releaser(record))


class MeshChannel(grpc.Channel):
    """A ``grpc.Channel`` to one mesh target; get it from :meth:`meshlib.Mesh.channel`.

    Example::

        channel = mesh.channel("reviews")
        stub = reviews_pb2_grpc.ReviewsStub(channel)
        stub.Get(request, timeout=2.0)
    """

    def __init__(self, target: Target, pool: ChannelPool, *, xds_address: str,
                 resolve_timeout: float, sleep: Callable[[float], Any] | None = None,
                 telemetry: ClientTelemetry | None = None) -> None:
        self._target = target
        self._telemetry = telemetry
        self._pool = pool
        self._xds_address = xds_address
        self._resolve_timeout = resolve_timeout
        self._sleep = sleep
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
        callback(self._connectivity())
        if not self._target.ready.is_set():
            import threading

            def notify() -> None:
                self._target.ready.wait()
                if callback in self._subscribers:
                    callback(self._connectivity())

            threading.Thread(target=notify, daemon=True, name="meshlib-subscribe").start()

    def _connectivity(self) -> grpc.ChannelConnectivity:
        if self._target.table is not None:
            return grpc.ChannelConnectivity.READY
        if self._target.ready.is_set():
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.CONNECTING

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
