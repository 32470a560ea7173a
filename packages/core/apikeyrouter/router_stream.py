"""A routed streaming response: chunks pass through as bytes; accounting happens at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from apikeyrouter.domain.interfaces.provider_adapter import UpstreamStream
from apikeyrouter.domain.models.outcome import FailureKind, ProviderFailure
from apikeyrouter.domain.models.response import AttemptRecord, Usage
from apikeyrouter.domain.models.routing_decision import RoutingDecision
from apikeyrouter.utils.exceptions import StreamInterruptedError

if TYPE_CHECKING:
    from apikeyrouter.orchestration.recorder import OutcomeRecorder
    from apikeyrouter.orchestration.run import Lease, RequestRun


class RoutedStream:
    """Iterate for OpenAI chunk payloads (JSON bytes), or :meth:`chunks` for dicts.

    ``key_used``, ``provider_id`` and ``decision`` are known before the first chunk, so a proxy
    can put them in response headers.
    """

    def __init__(
        self, recorder: OutcomeRecorder, run: RequestRun, lease: Lease, upstream: UpstreamStream
    ) -> None:
        self._recorder = recorder
        self._run = run
        self._lease = lease
        self._upstream = upstream
        self._iterator = aiter(upstream)
        self._first: bytes | None = None
        self._finished = False

    @property
    def key_used(self) -> str:
        return self._lease.key.id

    @property
    def provider_id(self) -> str:
        return self._lease.key.provider_id

    @property
    def decision(self) -> RoutingDecision:
        return self._lease.decision

    @property
    def attempts(self) -> list[AttemptRecord]:
        return self._run.attempts

    @property
    def usage(self) -> Usage | None:
        return self._upstream.usage

    async def prefetch(self) -> ProviderFailure | None:
        """Pull the first chunk so that a stream dying before any output can fail over."""
        try:
            self._first = await anext(self._iterator)
        except StopAsyncIteration:
            self._first = None
        except StreamInterruptedError as exc:
            await self._upstream.aclose()
            return ProviderFailure(FailureKind.CONNECTION, None, exc.message)
        return None

    async def _iterate(self) -> AsyncIterator[bytes]:
        recorder, run, lease = self._recorder, self._run, self._lease
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            async for payload in self._iterator:
                yield payload
        except StreamInterruptedError as exc:
            self._finished = True
            failure = ProviderFailure(FailureKind.CONNECTION, None, exc.message)
            await recorder.failed(run, lease, failure)
            await recorder.finish(run, lease)
            raise
        finally:
            if not self._finished:
                # Either a clean end or the caller stopped reading: both count as served.
                self._finished = True
                await self._upstream.aclose()
                await recorder.succeeded(
                    run, lease, self._upstream.usage, self._upstream.rate_limit
                )
                await recorder.finish(run, lease)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        async for payload in self._iterate():
            chunk = orjson.loads(payload)
            if isinstance(chunk, dict):
                yield chunk

    async def aclose(self) -> None:
        """Stop early; the key is accounted as having served the request."""
        if not self._finished:
            async for _ in self._iterate():
                break
