"""The Redis pool bounds connections in use, makes a caller wait for a free one, and gives up
after its timeout with the error redis-py's blocking pool gives; after an outage, the store
reconnects afresh rather than reuse sockets to the server that died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from apikeyrouter.infrastructure.state_store.redis_pool import WaitingConnectionPool
from apikeyrouter.infrastructure.state_store.redis_store import RedisStateStore
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.redis
PoolMaker = Callable[[int, float], WaitingConnectionPool]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolMaker]:
    """Pools of a given bound and wait timeout, disconnected after the test."""
    pools: list[WaitingConnectionPool] = []

    def make(max_connections: int, timeout: float) -> WaitingConnectionPool:
        pool = WaitingConnectionPool.from_url(
            REDIS_URL, max_connections=max_connections, timeout=timeout
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.disconnect()


async def test_a_caller_waits_for_a_released_connection(make_pool: PoolMaker) -> None:
    pool = make_pool(2, 10.0)
    first, second = await pool.get_connection(), await pool.get_connection()
    waiting = asyncio.create_task(pool.get_connection())
    await asyncio.sleep(0)  # let it reach the wait
    assert not waiting.done()
    await pool.release(first)
    third = await waiting
    assert third is first  # the released connection, reused
    await pool.release(second)
    await pool.release(third)


async def test_waiting_ends_after_the_timeout_with_no_connection_available(
    make_pool: PoolMaker,
) -> None:
    pool = make_pool(1, 0.05)
    held = await pool.get_connection()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await pool.get_connection()
    await pool.release(held)
    again = await pool.get_connection()  # the timed-out wait took no slot
    await pool.release(again)


async def test_a_burst_never_opens_more_connections_than_the_bound(make_pool: PoolMaker) -> None:
    pool = make_pool(3, 10.0)
    client = Redis(connection_pool=pool)
    replies = await asyncio.gather(*(client.ping() for _ in range(50)))
    assert all(replies)
    opened = len(pool._available_connections) + len(pool._in_use_connections)
    assert 1 <= opened <= 3


async def test_releasing_a_connection_twice_frees_one_slot(make_pool: PoolMaker) -> None:
    pool = make_pool(1, 0.05)
    held = await pool.get_connection()
    await pool.release(held)
    with pytest.raises(KeyError):  # redis-py: not in use any more
        await pool.release(held)
    again = await pool.get_connection()
    with pytest.raises(RedisConnectionError):  # still a bound of one
        await pool.get_connection()
    await pool.release(again)


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        WaitingConnectionPool(max_connections=0)


async def test_prepare_closes_idle_connections_so_none_outlives_an_outage(
    make_redis: Callable[..., RedisStateStore],
) -> None:
    store = make_redis()
    await store.prepare()
    client = store._client
    await asyncio.gather(*(client.ping() for _ in range(4)))
    idle = list(client.connection_pool._available_connections)
    assert idle
    sockets = [connection._writer for connection in idle if connection._writer is not None]
    assert len(sockets) == len(idle)
    # What the resilient store runs once the server answers again after an outage.
    await store.prepare()
    # Every idle socket was closed; prepare's own pipeline then connected one of them anew.
    assert all(c._writer is not before for c, before in zip(idle, sockets, strict=True))
    assert all(before.is_closing() for before in sockets)
    assert await client.ping()
