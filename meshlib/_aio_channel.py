"""``AioMeshChannel``: the ``grpc.aio.Channel`` counterpart of :class:`MeshChannel`.

It is not built from ``grpc.aio`` client interceptors: each of those costs about
55 µs per call here (grpc.aio wraps every intercepted call in a task). A call is a
light awaitable instead — awaiting it runs the routing, picking and retry logic in
the caller's own task, then awaits the endpoint channel's call directly. Metadata,
code and details come from the last attempt.

It is the grpc.aio driver of the one call pipeline (:mod:`meshlib._pipeline`): the
same :class:`~meshlib._pipeline.Call` as the sync channel decides; this module only
awaits attempts and the waits between them (the Mesh's ``sleep``, made awaitable).
Server-streaming calls are retried until the first response message;
request-streaming calls are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

from meshlib._cluster_state import EndpointState
from meshlib._pipeline import Call, byte_counting, count_raw, resolve_failure
from meshlib._route_table import Metadata, RouteTable
from meshlib.errors import CallError, status_code

if TYPE_CHECKING:
    from meshlib._clients import Clients
    from meshlib._pool import AioChannelPool
    from meshlib._resolver import Target

__all__ = ["AioMeshChannel"]

_CANCELLED = grpc.StatusCode.CANCELLED
_MAX_CACHED = 1024


class _AioBase:
    __slots__ = ("__weakref__", "_bytes", "_cache", "_clients", "_clock", "_deser", "_method",
                 "_pool", "_ser", "_target", "_telemetry")

    def __init__(self, channel: AioMeshChannel, method: str, ser: Any, deser: Any) -> None:
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
        self._pool: AioChannelPool | None = None

    async def _wait_table(self, timeout: float | None) -> RouteTable:
        """The target's first table, waited for (at most ``resolve_timeout``)."""
        wait = self._clients.settings.resolve_timeout
        if timeout is not None and timeout < wait:
            wait = timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._target.wait_async(), wait)
        table = self._target.table
        if table is None:
            raise resolve_failure(self._target, wait, self._clients.settings.xds_address)
        return table

    def _callable(self, endpoint: EndpointState) -> Any:
        pool = self._pool
        if pool is None or not pool.is_current():
            pool = self._pool = self._clients.aio_pool()
            pool.tracker.track(self)
            self._cache.clear()
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        made = getattr(pool.get(endpoint.address, endpoint.server_name), self._kind)(
            self._method, request_serializer=self._ser, response_deserializer=self._deser,
            _registered_method=True)
        self._cache[endpoint] = made
        return made

    _kind = ""  # the grpc.aio.Channel method that makes this kind of multicallable

    async def _call(self, timeout: float | None, metadata: Metadata,
                    retry: bool = True) -> Call:
        """Route and start; wait out an injected delay, raise an injected abort."""
        table = self._target.table
        if table is None:
            table = await self._wait_table(timeout)
        call = Call(table, self._method, metadata, timeout, self._telemetry, self._method,
                    self._clock, retry)
        if call.delay:
            await self._clients.async_sleep(call.delay)
            call.start()
        if call.aborted is not None:
            raise call.aborted
        return call


class _AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryMultiCallable):
    __slots__ = ()

    _kind = "unary_unary"

    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: Metadata = None, credentials: grpc.CallCredentials | None = None,
                 wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> _AioUnaryCall:
        return _AioUnaryCall(self, request, timeout, metadata,
                             (credentials, wait_for_ready, compression))

    async def _invoke(self, handle: _AioUnaryCall) -> Any:
        """The whole call, awaited in the caller's task."""
        try:
            call = await self._call(handle._timeout, handle._metadata)
        except BaseException as err:
            handle._error = err
            raise
        counters = self._bytes if call.record is not None else None
        credentials, wait_for_ready, compression = handle._options
        request = handle._request
        try:
            while True:
                endpoint = call.pick()
                try:
                    multi = self._cache.get(endpoint) or self._callable(endpoint)
                    rpc = handle._rpc = multi(
                        request, timeout=call.attempt_timeout, metadata=call.attempt_headers,
                        credentials=credentials, wait_for_ready=wait_for_ready,
                        compression=compression)
                    response = await rpc
                except grpc.RpcError as err:
                    if counters is not None:
                        count_raw(counters, request, None)
                    wait = call.failed_rpc(endpoint, err)
                    if wait is None:
                        call.give_up(err)
                    if wait:
                        await self._clients.async_sleep(wait)
                    continue
                except BaseException:
                    call.cancelled(endpoint)
                    raise
                call.succeeded(endpoint)
                if counters is not None:
                    count_raw(counters, request, response)
                return response
        except BaseException as err:
            handle._error = err
            call.finish(err)
            raise


class _AioUnaryCall(grpc.aio.UnaryUnaryCall):
    """An awaitable unary call. Awaiting it runs the whole pipeline in the caller's
    task (no extra task); the other methods wait for it to finish, then answer from
    the last attempt."""

    __slots__ = ("_callable", "_error", "_metadata", "_options", "_request", "_rpc", "_task",
                 "_timeout")

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
            code = status_code(self._error) if self._error is not None else None
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
        self._plan: Call | None = None

    def _start_on(self, endpoint: EndpointState) -> Any:
        plan = self._plan
        assert plan is not None
        multi = self._callable._cache.get(endpoint) or self._callable._callable(endpoint)
        return multi(self._request, timeout=plan.attempt_timeout,
                     metadata=plan.attempt_headers, **self._kwargs)

    async def _attempt(self) -> Any:
        if self._plan is None:
            self._plan = await self._callable._call(self._timeout, self._metadata)
        rpc = self._rpc = self._plan.open(self._start_on, _ended)
        return rpc

    async def _first(self) -> Any:
        rpc = self._rpc if self._rpc is not None else await self._attempt()
        while True:
            try:
                return await rpc.read()
            except grpc.RpcError as err:
                plan = self._plan
                assert plan is not None
                wait = plan.retry_stream(err)
                if wait is None:
                    plan.give_up(err)
                if wait:
                    await self._callable._clients.async_sleep(wait)
                rpc = await self._attempt()

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


def _ended(call: Call, endpoint: EndpointState, rpc: Any) -> Callable[[Any], None]:
    """The done callback of an aio streaming attempt. The call's code is only
    awaitable, so it is read from a task when the call did not simply succeed."""
    def done(finished: Any) -> None:
        if finished.cancelled():
            call.stream_ended(endpoint, _CANCELLED)
            return

        async def settle() -> None:
            code: grpc.StatusCode | None = _CANCELLED
            try:
                code = await finished.code()
            finally:  # released even when the loop shuts down first
                call.stream_ended(endpoint, code)

        task = asyncio.get_running_loop().create_task(settle())
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)
    return done


_SETTLING: set[asyncio.Task[None]] = set()  # strong references until they finish


class _AioStreamRequest(_AioBase):
    """Request-streaming kinds: one attempt, balanced and counted."""

    __slots__ = ()

    def _sync_call(self, timeout: float | None, metadata: Metadata) -> Call:
        """A call object is due at once: the target must be known already, and an
        injected delay cannot be waited (the abort still applies)."""
        table = self._target.table
        if table is None:
            raise resolve_failure(self._target, 0.0, self._clients.settings.xds_address)
        call = Call(table, self._method, metadata, timeout, self._telemetry, self._method,
                    self._clock, False)
        if call.delay:
            call.delay = 0.0
            call.start()
        if call.aborted is not None:
            raise call.aborted
        return call

    def __call__(self, request_iterator: Any = None, *, timeout: float | None = None,
                 metadata: Metadata = None, **kwargs: Any) -> Any:
        call = self._sync_call(timeout, metadata)

        def start(endpoint: EndpointState) -> Any:
            multi = self._cache.get(endpoint) or self._callable(endpoint)
            return multi(request_iterator, timeout=call.attempt_timeout,
                         metadata=call.attempt_headers, **kwargs)

        return call.open(start, _ended)


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

    def __init__(self, target: Target, clients: Clients) -> None:
        self._target = target
        self._clients = clients

    @property
    def target(self) -> str:
        """The target this channel calls, as given."""
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
        """READY once the target's configuration is known, TRANSIENT_FAILURE if it is
        not in the mesh, else CONNECTING."""
        return self._target.connectivity()

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
                raise resolve_failure(self._target, 0.0, self._clients.settings.xds_address)

    async def close(self, grace: float | None = None) -> None:
        """Nothing to free per channel: endpoint channels belong to the Mesh."""

    async def __aenter__(self) -> AioMeshChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
