"""The timeout decorator: deadline propagation for sync and async functions."""

from __future__ import annotations

import asyncio

import grpc
import pytest

import meshlib
from meshlib import DeadlineExceededError


def test_sync_sets_the_deadline_for_calls_inside_and_nested_scopes_only_shorten(fake_clock):
    seen = []

    @meshlib.timeout(2.0, clock=fake_clock)
    def inner() -> None:
        seen.append(meshlib.current_deadline())

    inner()
    assert seen == [1002.0]
    assert meshlib.current_deadline() is None

    @meshlib.timeout(5.0, clock=fake_clock)
    def outer() -> None:
        fake_clock.advance(1)
        inner()  # 1001 + 2 < 1005: shorter, so it wins

    @meshlib.timeout(1.5, clock=fake_clock)
    def short_outer() -> None:
        inner()  # 1000 + 2 > 1001.5: the caller's deadline stays

    outer()
    assert seen[-1] == 1003.0
    short_outer()
    assert seen[-1] == 1002.5  # clock was advanced by outer: 1001 + 1.5


def test_sync_fails_fast_only_when_the_deadline_already_passed(fake_clock):
    ran = []
    inner = meshlib.timeout(1.0, clock=fake_clock)(lambda: ran.append(1))
    with meshlib.deadline_scope(1.0, now=fake_clock() - 5), \
            pytest.raises(DeadlineExceededError) as info:
        inner()
    assert ran == [] and info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with meshlib.deadline_scope(1.0, now=fake_clock() - 0.5):
        inner()
    assert ran == [1]


async def test_async_cancels_at_the_deadline():
    never = asyncio.get_running_loop().create_future()

    @meshlib.timeout(0.001)
    async def stuck() -> None:
        await never

    with pytest.raises(DeadlineExceededError) as info:
        await stuck()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, grpc.RpcError)
    assert "stuck" in str(info.value)


async def test_async_sets_the_deadline_and_a_passed_one_fails_fast(fake_clock):
    @meshlib.timeout(3.0, clock=fake_clock)
    async def fn() -> float | None:
        await asyncio.sleep(0)
        return meshlib.current_deadline()

    assert await fn() == 1003.0
    with meshlib.deadline_scope(1.0, now=fake_clock() - 2), \
            pytest.raises(DeadlineExceededError, match="passed"):
        await fn()


async def test_async_a_timeout_error_from_inside_passes_through():
    @meshlib.timeout(10)
    async def fn() -> None:
        raise TimeoutError("inner")

    with pytest.raises(TimeoutError, match="inner") as info:
        await fn()
    assert not isinstance(info.value, DeadlineExceededError)


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        meshlib.timeout(0)
