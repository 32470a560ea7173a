"""The CLI's process tunes the garbage collector while it serves, and puts it back after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from apikeyrouter.infrastructure.transport.asgi_transport import ASGITransport
from apikeyrouter.testing import SimulatedProvider
from apikeyrouter_proxy.main import create_app, lifespan
from apikeyrouter_proxy.services.gc_tuning import restore_gc, tune_gc

from .conftest import KEY_A
from .support import make_config


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    """Whatever a test does, the rest of the suite runs with the settings it started with."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_tune_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    state = tune_gc(12_345)
    assert gc.get_threshold() == (12_345, before[1], before[2])
    assert gc.get_freeze_count() > 1000  # the interpreter's modules at least
    restore_gc(state)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("manage_gc", "threshold", "tuned"),
    [(True, 20_000, True), (False, 20_000, False), (True, 0, False)],
)
async def test_the_app_tunes_only_when_asked_and_restores_on_shutdown(
    sim: SimulatedProvider, manage_gc: bool, threshold: int, tuned: bool
) -> None:
    before = gc.get_threshold()
    config = make_config([{"key": KEY_A}], server={"gc_threshold": threshold})
    app = create_app(config, transport=ASGITransport(sim), manage_gc=manage_gc)
    async with lifespan(app):
        assert (gc.get_threshold()[0] == threshold) is tuned
        assert (gc.get_freeze_count() > 0) is tuned
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
