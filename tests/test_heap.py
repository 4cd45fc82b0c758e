"""The collector settings (``tritonmix.heap``): the processes we own freeze their start-up heap and collect the
youngest generation less often; a controller inside a user's process leaves the user's collector as it found it."""
from __future__ import annotations

import gc

from tritonmix.controller import Controller
from tritonmix.controller.signals import NullSource
from tritonmix.controller.simulation import FakeClock
from tritonmix.fleet import EndpointSpec, Fleet
from tritonmix.heap import YOUNG_THRESHOLD, configure_collector
from tritonmix.request import Router


def test_configure_collector_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    before, thresholds = gc.get_freeze_count(), gc.get_threshold()  # 0 unless another module's fixture froze
    kept = [object(), {"a": []}]
    try:
        frozen = configure_collector()
        # frozen objects can die since (another test's thread letting go of them), none is frozen but by a freeze
        assert before < gc.get_freeze_count() <= frozen
        assert not any(o is kept[1] for o in gc.get_objects(2))  # a frozen dict is in no generation
        assert gc.get_threshold() == (YOUNG_THRESHOLD, thresholds[1], thresholds[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if before:
            gc.freeze()  # what was frozen before (and what the test made since) leaves the collector's view again
    assert gc.get_threshold() == thresholds


def test_a_controller_in_a_users_process_leaves_the_collector_as_it_was() -> None:
    before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())
    fleet = Fleet(endpoints=tuple(EndpointSpec(name=f"e{i}", accelerator="gpu", price_per_hour=1.0,
                                               url=f"127.0.0.1:{9000 + i}", max_rps=10.0) for i in range(4)))
    clock = FakeClock()
    router = Router(fleet, seed=1, clock=clock)
    controller = Controller(fleet, router, source=NullSource(4), clock=clock, jitter=0.0, seed=1)
    for _ in range(3):
        controller.tick()
        clock.advance(0.5)
    controller.stop()
    assert (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()) == before
