"""The usage ledger, written off the request path: a bounded buffer flushed in batches.

Every served request adds its usage (requests, tokens, cost) to the durable ledger row of its
(key, provider, model, client, UTC day). Writing that row inline would put a MongoDB round trip
on every response, so :meth:`UsageLedgerWriter.record` only appends to an in-memory buffer (no
await, no allocation beyond the record) and a background task flushes it: as soon as a batch
fills, or ``flush_seconds`` after the first record of a batch arrived. A batch is summed per row
first, so a thousand requests on three keys cost three upserts, sent concurrently.

Bounded: beyond ``queue_size`` buffered records, new ones are dropped and counted (``dropped``,
and the ``apikeyrouter_proxy_usage_ledger_dropped_total`` metric): a stalled database costs
ledger rows, never memory or latency. Rows that fail to write are kept (one per row key, so
this too is bounded) and merged into the next flush, after a backoff. A write that timed out
after the server applied it is counted again on retry: the ledger errs towards overcounting.
``close`` flushes what is buffered, within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from apikeyrouter.domain.models.response import Usage
from apikeyrouter.infrastructure.observability.logger import get_logger
from apikeyrouter_proxy.config.schema import UsageLedgerConfig

__all__ = ["LedgerSink", "UsageLedgerWriter"]

_log = get_logger("apikeyrouter.proxy.ledger")

#: Backoff between failed flushes, doubling from min to max.
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class LedgerSink(Protocol):
    """Where ledger rows go: the MongoDB store (or the tiered store over it)."""

    async def record_usage(
        self,
        *,
        key_id: str,
        provider_id: str,
        model: str,
        client_id: str | None,
        day: str | date,
        requests: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None: ...


RowKey = tuple[str, str, str, str | None, str]  # key, provider, model, client, UTC day


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: _Totals) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd


@dataclass(slots=True, frozen=True)
class _Record:
    key_id: str
    provider_id: str
    model: str
    client_id: str | None
    at: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class UsageLedgerWriter:
    """Buffer usage records and write them to ``sink`` in batches (see the module docstring).

    ``on_drop(n)`` is called when records are dropped (the proxy counts them in a metric).
    """

    def __init__(
        self,
        sink: LedgerSink,
        config: UsageLedgerConfig,
        *,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._capacity = config.queue_size
        self._batch_size = config.batch_size
        self._flush_seconds = config.flush_seconds
        self._on_drop = on_drop
        self._clock = clock
        self._buffer: list[_Record] = []
        self._failed: dict[RowKey, _Totals] = {}
        self._pending = asyncio.Event()
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        #: Records dropped because the buffer was full (or the writer was closed).
        self.dropped = 0
        #: Requests whose usage reached the ledger.
        self.written = 0
        #: Flushes that failed (their rows are retried).
        self.failures = 0

    # --- the request path -------------------------------------------------------------------
    def record(
        self,
        key_id: str,
        provider_id: str,
        model: str,
        client_id: str | None,
        usage: Usage | None,
        cost_usd: float | None,
    ) -> None:
        """Note one served request. Never blocks, never raises for a full buffer."""
        if not self._accepting or len(self._buffer) >= self._capacity:
            self._drop(1)
            return
        self._buffer.append(
            _Record(
                key_id,
                provider_id,
                model,
                client_id,
                self._clock(),
                usage.prompt_tokens if usage is not None else 0,
                usage.completion_tokens if usage is not None else 0,
                cost_usd or 0.0,
            )
        )
        if len(self._buffer) == 1:
            self._idle.clear()
            self._pending.set()
        if len(self._buffer) >= self._batch_size:
            self._full.set()

    def _drop(self, count: int) -> None:
        if not self.dropped:
            _log.warning("usage_ledger_dropping", reason="buffer full or writer closed")
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="usage-ledger-writer"
            )

    async def flush(self, timeout: float = 5.0) -> bool:
        """Write everything buffered now; True if it all reached the sink within ``timeout``."""
        if self._task is None or self._task.done():
            return not self._buffer and not self._failed
        self._full.set()  # no waiting for the batch to fill
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()  # set once nothing is buffered, failed or in flight
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting records, flush within ``timeout``, stop the task."""
        self._accepting = False
        if self._task is not None and not self._task.done():
            if not await self.flush(timeout):
                lost = len(self._buffer) + sum(t.requests for t in self._failed.values())
                _log.warning("usage_ledger_unflushed", records=lost)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    # --- the writer -------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            await self._pending.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._full.wait()
            batch, self._buffer = self._buffer, []
            self._pending.clear()
            self._full.clear()
            if await self._write(batch):
                delay = RETRY_MIN_SECONDS
            else:
                await asyncio.sleep(delay)  # backoff before retrying a failing database
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                self._pending.set()  # the failed rows are waiting
            if not self._buffer and not self._failed:
                self._idle.set()

    async def _write(self, batch: Sequence[_Record]) -> bool:
        rows, self._failed = self._failed, {}
        for record in batch:
            row = (
                record.key_id,
                record.provider_id,
                record.model,
                record.client_id,
                _day(record.at),
            )
            totals = rows.get(row)
            if totals is None:
                totals = rows[row] = _Totals()
            totals.add(_Totals(1, record.prompt_tokens, record.completion_tokens, record.cost_usd))
        if not rows:
            return True
        items = list(rows.items())
        results = await asyncio.gather(
            *(self._write_row(row, totals) for row, totals in items), return_exceptions=True
        )
        ok = True
        for (row, totals), result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                ok = False
                self._failed.setdefault(row, _Totals()).add(totals)
            else:
                self.written += totals.requests
        if not ok:
            self.failures += 1
            failed = sum(t.requests for t in self._failed.values())
            _log.warning("usage_ledger_write_failed", rows=len(self._failed), requests=failed)
        return ok

    async def _write_row(self, row: RowKey, totals: _Totals) -> None:
        key_id, provider_id, model, client_id, day = row
        await self._sink.record_usage(
            key_id=key_id,
            provider_id=provider_id,
            model=model,
            client_id=client_id,
            day=day,
            requests=totals.requests,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            cost_usd=totals.cost_usd,
        )
