"""``AioMeshChannel``: the ``grpc.aio.Channel`` counterpart of :class:`MeshChannel`.

It is not built from ``grpc.aio`` client interceptors: each of those costs about
55 µs per call here (grpc.aio wraps every intercepted call in a task). A call is a
light awaitable instead — awaiting it runs the routing, picking and retry logic in
the caller's own task, then awaits the endpoint channel's call directly. Metadata,
code and details come from the last attempt.

The same decisions as the sync channel (:mod:`meshlib._attempts`); retries after a
first failure run under tenacity's ``AsyncRetrying``. Server-streaming calls are
retried until the first response message; request-streaming calls are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from meshlib._attempts import (
    after_delay,
    aretry_after,
    attempt_timeout,
    call_timeout,
    fault_abort,
    fault_delay,
    retryable,
    rpc_code,
)
from meshlib._call_context import RETRIES_OWNED
from meshlib._channel import (
    byte_counting,
    code_name,
    count_raw,
    finish_stream,
    resolve_failure,
)
from meshlib._cluster_state import ClusterState, EndpointState
from meshlib._pool import AioChannelPool
from meshlib._resolver import Target
from meshlib._route_table import Metadata, RouteEntry, RouteTable
from meshlib.errors import CallError
from meshlib.telemetry._client import ClientTelemetry, Record

__all__ = ["AioMeshChannel"]

_CANCELLED = grpc.StatusCode.CANCELLED
_MAX_CACHED = 1024


class _AioBase:
    __slots__ = ("__weakref__", "_bytes", "_cache", "_channel", "_deser", "_method", "_pool",
                 "_ser", "_target")

    def __init__(self, channel: AioMeshChannel, method: str, ser: Any, deser: Any) -> None:
        self._channel = channel
        self._target = channel._target
        self._method = method
        telemetry = channel._telemetry
        ser, deser, self._bytes = byte_counting(telemetry, channel._target.name, method,
                                                self._kind, ser, deser)
        self._ser = ser
        self._deser = deser
        self._cache: dict[EndpointState, Any] = {}
        self._pool: AioChannelPool | None = None

    async def _table(self, timeout: float | None) -> RouteTable:
        table = self._target.table
        if table is not None:
            return table
        wait = self._channel._resolve_timeout
        if timeout is not None and timeout < wait:
            wait = timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._target.wait_async(), wait)
        table = self._target.table
        if table is None:
            raise resolve_failure(self._target, wait, self._channel._xds_address)
        return table

    def _callable(self, endpoint: EndpointState) -> Any:
        pool = self._pool
        if pool is None or not pool.is_current():
            pool = self._pool = self._channel._pool_for_loop()
            pool.tracker.track(self)
            self._cache.clear()
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        made = self._make(pool.get(endpoint.address, endpoint.server_name))
        self._cache[endpoint] = made
        return made

    _kind = ""  # the grpc.aio.Channel method that makes this kind of multicallable

    def _make(self, channel: grpc.aio.Channel) -> Any:
        return getattr(channel, self._kind)(self._method, request_serializer=self._ser,
                                            response_deserializer=self._deser,
                                            _registered_method=True)

    def _prepare(self, table: RouteTable, timeout: float | None, metadata: Metadata
                 ) -> tuple[RouteEntry, float | None, float]:
        """Route and time the call; returns the fault delay to wait first (0 mostly)."""
        entry = table.route(self._method, metadata)
        timeout = call_timeout(timeout, entry.timeout, self._target.name)
        fault = entry.fault
        delay = 0.0
        if fault is not None:
            delay = fault_delay(fault)
            if not delay:
                error = fault_abort(fault, self._target.name)
                if error is not None:
                    raise error
        return entry, timeout, delay

    async def _start(self, timeout: float | None, metadata: Metadata
                     ) -> tuple[RouteEntry, ClusterState, float | None, Record | None]:
        table = self._target.table
        if table is None:
            table = await self._table(timeout)
        entry, timeout, delay = self._prepare(table, timeout, metadata)
        if delay:
            await self._fault_delay(entry, delay)
            timeout = after_delay(timeout, delay, self._target.name)
        cluster = entry.pick_cluster()
        cluster.budget.record_request()
        return entry, cluster, timeout, self._record(table, entry, cluster, metadata)

    def _record(self, table: RouteTable, entry: RouteEntry, cluster: ClusterState,
                metadata: Metadata) -> Record | None:
        telemetry = self._channel._telemetry
        if telemetry is None:
            return None
        return telemetry.start(table.target, entry.route.name, cluster.service,
                               self._method, metadata, table.sampling, table.access_log)

    async def _fault_delay(self, entry: RouteEntry, delay: float) -> None:
        await asyncio.sleep(delay)
        assert entry.fault is not None
        error = fault_abort(entry.fault, self._target.name)
        if error is not None:
            raise error


class _AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryMultiCallable):
    __slots__ = ()

    _kind = "unary_unary"

    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: Metadata = None, credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> _AioUnaryCall:
        return _AioUnaryCall(self, request, timeout, metadata,
                             (credentials, wait_for_ready, compression))

    async def _invoke(self, call: _AioUnaryCall) -> Any:
        try:
            result = await self._attempts(call)
        except BaseException as err:
            call._error = err
            if call._record is not None:
                call._record.finish(code_name(err), True)
            raise
        if call._record is not None:
            call._record.finish("OK", False)
        return result

    async def _attempts(self, call: _AioUnaryCall) -> Any:
        timeout, metadata = call._timeout, call._metadata
        table = self._target.table
        if table is None:
            table = await self._table(timeout)
        entry, timeout, delay = self._prepare(table, timeout, metadata)
        if delay:
            await self._fault_delay(entry, delay)
            timeout = after_delay(timeout, delay, self._target.name)
        cluster = entry.pick_cluster()
        cluster.budget.record_request()
        call._record = self._record(table, entry, cluster, metadata)
        retry = entry.retry
        deadline = None
        if retry is not None:
            if RETRIES_OWNED.get():
                retry = None
            else:
                deadline = None if timeout is None else time.monotonic() + timeout
                if retry.per_try_timeout is not None:
                    timeout = attempt_timeout(retry.per_try_timeout, deadline)
        hash_key = entry.hash_key(metadata) if entry.hash_headers else None
        try:
            return await self._once(call, cluster, hash_key, timeout)
        except grpc.RpcError as err:
            if not retryable(err, retry):
                raise
            first = err

        def again() -> Awaitable[Any]:
            timeout = attempt_timeout(retry.per_try_timeout, deadline)
            return self._once(call, cluster, hash_key, timeout)

        return await aretry_after(first, again, retry, cluster, deadline)

    async def _once(self, call: _AioUnaryCall, cluster: ClusterState, hash_key: str | None,
                    timeout: float | None) -> Any:
        """One attempt: pick an endpoint, call it, report the outcome."""
        credentials, wait_for_ready, compression = call._options
        endpoint = cluster.pick(hash_key)
        record = call._record
        metadata = call._metadata if record is None else record.attempt(endpoint)
        try:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            rpc = call._rpc = multi(call._request, timeout=timeout, metadata=metadata,
                                    credentials=credentials, wait_for_ready=wait_for_ready,
                                    compression=compression)
            response = await rpc
        except grpc.RpcError as err:
            code = rpc_code(err)
            cluster.release(endpoint, code, err)
            if record is not None:
                record.attempt_end(code.name if code else "UNKNOWN", True)
                count_raw(self._bytes, call._request, None)
            raise
        except BaseException:
            cluster.release(endpoint, _CANCELLED)
            if record is not None:
                record.attempt_end("CANCELLED", True)
            raise
        cluster.release(endpoint, None)
        if record is not None:
            record.attempt_end("OK", False)
            count_raw(self._bytes, call._request, response)
        return response


class _AioUnaryCall(grpc.aio.UnaryUnaryCall):
    """An awaitable unary call. Awaiting it runs the whole pipeline in the caller's
    task (no extra task); the other methods wait for it to finish, then answer from
    the last attempt."""

    __slots__ = ("_callable", "_done", "_error", "_metadata", "_options", "_record",
                 "_request", "_result", "_rpc", "_task", "_timeout")

    def __init__(self, callable_: _AioUnaryUnary, request: Any, timeout: float | None,
                 metadata: Metadata, options: tuple[Any, Any, Any]) -> None:
        self._callable = callable_
        self._request = request
        self._timeout = timeout
        self._metadata = metadata
        self._options = options
        self._rpc: Any = None
        self._task: asyncio.Task[Any] | None = None
        self._error: BaseException | None = None
        self._record: Record | None = None

    def __await__(self) -> Any:
        if self._task is None:
            self._task = _INLINE
            return self._callable._invoke(self).__await__()
        return self._wait().__await__()

    def _ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._callable._invoke(self))

    async def _wait(self) -> Any:
        self._ensure_started()
        task = self._task
        if task is _INLINE:  # another coroutine is awaiting it inline: poll the attempt
            while self._rpc is None and self._error is None:
                await asyncio.sleep(0.001)
            if self._rpc is not None and self._error is None:
                return await self._rpc
            raise self._error  # type: ignore[misc]
        assert task is not None
        return await task

    async def _settled(self) -> None:
        with contextlib.suppress(BaseException):
            await self._wait()

    async def code(self) -> grpc.StatusCode:
        await self._settled()
        if isinstance(self._error, CallError) or self._rpc is None:
            code = rpc_code(self._error) if self._error is not None else None
            return code or (grpc.StatusCode.UNKNOWN if self._error else grpc.StatusCode.OK)
        return await self._rpc.code()

    async def details(self) -> str:
        await self._settled()
        if self._rpc is None or isinstance(self._error, CallError):
            return str(self._error) if self._error else ""
        return await self._rpc.details()

    async def initial_metadata(self) -> Any:
        await self._settled()
        return await self._rpc.initial_metadata() if self._rpc is not None else None

    async def trailing_metadata(self) -> Any:
        await self._settled()
        return await self._rpc.trailing_metadata() if self._rpc is not None else None

    async def wait_for_connection(self) -> None:
        await self._settled()

    def cancel(self) -> bool:
        if self._task is not None and self._task is not _INLINE:
            return self._task.cancel()
        return self._rpc.cancel() if self._rpc is not None else False

    def cancelled(self) -> bool:
        return self._rpc.cancelled() if self._rpc is not None else False

    def done(self) -> bool:
        if self._task is not None and self._task is not _INLINE:
            return self._task.done()
        return self._rpc.done() if self._rpc is not None else self._error is not None

    def time_remaining(self) -> float | None:
        return self._rpc.time_remaining() if self._rpc is not None else self._timeout

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._ensure_started()
        if self._task is not _INLINE and self._task is not None:
            self._task.add_done_callback(lambda _: callback(self))
        elif self._rpc is not None:
            self._rpc.add_done_callback(lambda _: callback(self))


_INLINE: Any = object()  # marks a call being awaited inline (no task)


class _AioUnaryStream(_AioBase, grpc.aio.UnaryStreamMultiCallable):
    __slots__ = ()

    _kind = "unary_stream"

    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: Metadata = None, credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> _AioStreamCall:
        return _AioStreamCall(self, request, timeout, metadata,
                              dict(credentials=credentials, wait_for_ready=wait_for_ready,
                                   compression=compression))


class _AioStreamCall(grpc.aio.UnaryStreamCall):
    """A server-streaming call, retried (within policy) until its first message."""

    def __init__(self, callable_: _AioUnaryStream, request: Any, timeout: float | None,
                 metadata: Metadata, kwargs: dict[str, Any]) -> None:
        self._callable = callable_
        self._request = request
        self._timeout = timeout
        self._metadata = metadata
        self._kwargs = kwargs
        self._rpc: Any = None
        self._received = False  # the first message (or EOF) has been read
        self._iter: AsyncIterator[Any] | None = None
        self._setup: tuple[RouteEntry, ClusterState, float | None, Any] | None = None
        self._record: Record | None = None

    async def _attempt(self) -> Any:
        if self._setup is None:
            entry, cluster, timeout, self._record = await self._callable._start(
                self._timeout, self._metadata)
            retry = None if RETRIES_OWNED.get() else entry.retry
            deadline = None if timeout is None else time.monotonic() + timeout
            self._setup = (entry, cluster, deadline, retry)
        entry, cluster, deadline, retry = self._setup
        per_try = retry.per_try_timeout if retry is not None else None
        record = self._record

        def start(endpoint: EndpointState) -> Any:
            multi = self._callable._cache.get(endpoint) or self._callable._callable(endpoint)
            sent = self._metadata if record is None else record.attempt(endpoint)
            return multi(self._request, timeout=attempt_timeout(per_try, deadline),
                         metadata=sent, **self._kwargs)

        rpc = self._rpc = cluster.start_call(
            entry.hash_key(self._metadata) if entry.hash_headers else None, start,
            _stream_releaser if record is None else _recording_releaser(record))
        return rpc

    async def _first(self) -> Any:
        rpc = self._rpc if self._rpc is not None else await self._attempt()
        try:
            return await rpc.read()
        except grpc.RpcError as err:
            assert self._setup is not None
            _, cluster, deadline, retry = self._setup
            if not retryable(err, retry):
                raise
            first = err

        async def again() -> Any:
            return await (await self._attempt()).read()

        return await aretry_after(first, again, retry, cluster, deadline)

    async def _messages(self) -> AsyncIterator[Any]:
        message = await self.read()
        while message is not grpc.aio.EOF:
            yield message
            message = await self._rpc.read()

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._iter is None:
            self._iter = self._messages()
        return self._iter

    async def read(self) -> Any:
        if not self._received:
            message = await self._first()
            self._received = True
            return message
        return await self._rpc.read()

    async def _ensure(self) -> Any:
        if self._rpc is None:
            await self._attempt()
        return self._rpc

    async def initial_metadata(self) -> Any:
        return await (await self._ensure()).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._ensure()).trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return await (await self._ensure()).code()

    async def details(self) -> str:
        return await (await self._ensure()).details()

    async def wait_for_connection(self) -> None:
        await (await self._ensure()).wait_for_connection()

    def cancel(self) -> bool:
        return self._rpc.cancel() if self._rpc is not None else False

    def cancelled(self) -> bool:
        return self._rpc.cancelled() if self._rpc is not None else False

    def done(self) -> bool:
        return self._rpc.done() if self._rpc is not None else False

    def time_remaining(self) -> float | None:
        return self._rpc.time_remaining() if self._rpc is not None else self._timeout

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._rpc is not None:
            self._rpc.add_done_callback(lambda _: callback(self))


def _recording_releaser(record: Record
                        ) -> Callable[[ClusterState, EndpointState], Callable[[Any], None]]:
    return lambda cluster, endpoint: _stream_releaser(cluster, endpoint, record)


def _stream_releaser(cluster: ClusterState, endpoint: EndpointState,
                     record: Record | None = None) -> Callable[[Any], None]:
    """Release on completion; the aio call's code is only awaitable, so read it from a
    task when the call did not simply succeed."""
    def done(rpc: Any) -> None:
        if rpc.cancelled():
            cluster.release(endpoint, _CANCELLED)
            if record is not None:
                finish_stream(record, _CANCELLED)
            return

        async def settle() -> None:
            code: grpc.StatusCode | None = grpc.StatusCode.CANCELLED
            try:
                code = await rpc.code()
            finally:  # released even when the loop shuts down first
                cluster.release(endpoint, None if code is grpc.StatusCode.OK else code)
                if record is not None:
                    finish_stream(record, code)

        task = asyncio.get_running_loop().create_task(settle())
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)
    return done


_SETTLING: set[asyncio.Task[None]] = set()  # strong references until they finish


class _AioStreamRequest(_AioBase):
    """Request-streaming kinds: one attempt, balanced and counted."""

    __slots__ = ()

    def _sync_start(self, timeout: float | None, metadata: Metadata
                    ) -> tuple[RouteEntry, ClusterState, float | None, Record | None]:
        table = self._target.table
        if table is None:
            raise resolve_failure(self._target, 0.0, self._channel._xds_address)
        entry = table.route(self._method, metadata)
        if entry.fault is not None:  # the abort only: a call object is due at once
            error = fault_abort(entry.fault, self._target.name)
            if error is not None:
                raise error
        cluster = entry.pick_cluster()
        cluster.budget.record_request()
        return (entry, cluster, call_timeout(timeout, entry.timeout, self._target.name),
                self._record(table, entry, cluster, metadata))

    def __call__(self, request_iterator: Any = None, *, timeout: float | None = None,
                 metadata: Metadata = None, **kwargs: Any) -> Any:
        entry, cluster, timeout, record = self._sync_start(timeout, metadata)

        def start(endpoint: EndpointState) -> Any:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            sent = metadata if record is None else record.attempt(endpoint)
            return multi(request_iterator, timeout=timeout, metadata=sent, **kwargs)

        return cluster.start_call(entry.hash_key(metadata) if entry.hash_headers else None,
                                  start,
                                  _stream_releaser if record is None
                                  else _recording_releaser(record))


class _AioStreamUnary(_AioStreamRequest, grpc.aio.StreamUnaryMultiCallable):
    __slots__ = ()
    _kind = "stream_unary"


class _AioStreamStream(_AioStreamRequest, grpc.aio.StreamStreamMultiCallable):
    __slots__ = ()
    _kind = "stream_stream"


class AioMeshChannel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` to one mesh target; get it from
    :meth:`meshlib.Mesh.aio_channel`.

    Example::

        async with mesh.aio_channel("reviews") as channel:
            reply = await ReviewsStub(channel).Get(request, timeout=2.0)

    Request-streaming calls need the target's configuration already known (await
    :meth:`channel_ready` first, or make a unary call).
    """

    def __init__(self, target: Target, pools: Callable[[], AioChannelPool], *,
                 xds_address: str, resolve_timeout: float,
                 telemetry: ClientTelemetry | None = None) -> None:
        self._target = target
        self._telemetry = telemetry
        self._pools = pools
        self._xds_address = xds_address
        self._resolve_timeout = resolve_timeout

    def _pool_for_loop(self) -> AioChannelPool:
        return self._pools()

    @property
    def target(self) -> str:
        return self._target.name

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, _registered_method: bool = False
                    ) -> grpc.aio.UnaryUnaryMultiCallable:
        return _AioUnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool = False
                     ) -> grpc.aio.UnaryStreamMultiCallable:
        return _AioUnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool = False
                     ) -> grpc.aio.StreamUnaryMultiCallable:
        return _AioStreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, _registered_method: bool = False
                      ) -> grpc.aio.StreamStreamMultiCallable:
        return _AioStreamStream(self, method, request_serializer, response_deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._target.table is not None:
            return grpc.ChannelConnectivity.READY
        if self._target.ready.is_set():
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.CONNECTING

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity
                                    ) -> None:
        while self.get_state() == last_observed_state:
            if self._target.ready.is_set():
                await asyncio.sleep(0.05)
            else:
                await self._target.wait_async()

    async def channel_ready(self) -> None:
        """Wait until the target's configuration is known (READY)."""
        while self._target.table is None:
            await self._target.wait_async()
            if self._target.table is None:
                raise resolve_failure(self._target, 0.0, self._xds_address)

    async def close(self, grace: float | None = None) -> None:
        """Nothing to free per channel: endpoint channels belong to the Mesh."""

    async def __aenter__(self) -> AioMeshChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
