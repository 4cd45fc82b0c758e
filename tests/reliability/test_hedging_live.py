"""Hedged requests (``controller: {hedge: {}}``) on every client form against the emulated local fleet: with one of
the three endpoints slowed 10x (500 ms against a 300 ms SLO) and no controller to shed it, each request that lands
there is answered by its hedge on the other endpoint, well within the SLO; the losers are recorded (nothing stays
in flight). The controller is off so that the slow endpoint keeps its share and every request depends on hedging."""
from __future__ import annotations

import asyncio
import time
from typing import Any, List

import pytest

from reliability_support import MODEL, SLO_MS, client_fleet, inputs, module_of

REQUESTS = 24


def _picks(client: Any, slow: int) -> int:
    return client.router.dispatcher(MODEL, "interactive").stats().picks[slow]


@pytest.mark.parametrize("mode", ["sync-http", "sync-grpc", "aio-http", "aio-grpc"])
def test_a_hedge_answers_requests_stuck_on_a_slowed_endpoint(healthy: Any, mode: str) -> None:
    local = healthy
    protocol = mode.split("-")[1]
    module = module_of(mode)
    fleet = client_fleet(local, protocol, enabled=False, hedge={"max_share": 1.0})  # every late request
    names = list(local.fleet.names)
    slow = 0
    latencies: List[float] = []

    if mode.startswith("sync"):
        client = module.InferenceServerClient(fleet=fleet, seed=3)
        try:
            for k in range(6):  # warm-up at normal speed: the usual latencies are learnt
                client.infer(MODEL, inputs(module, k))
            local.slow_down(names[slow], 10.0)
            time.sleep(0.2)
            for k in range(REQUESTS):
                t0 = time.monotonic()
                client.infer(MODEL, inputs(module, k))
                latencies.append(time.monotonic() - t0)
            picks = _picks(client, slow)
            time.sleep(0.8)  # the losers on the slow endpoint end and are recorded
            in_flight = client.router.dispatcher(MODEL, "interactive").stats().in_flight
        finally:
            client.close()
    else:
        async def run() -> Any:
            client = module.InferenceServerClient(fleet=fleet, seed=3)
            try:
                for k in range(6):
                    await client.infer(MODEL, inputs(module, k))
                local.slow_down(names[slow], 10.0)
                await asyncio.sleep(0.2)
                for k in range(REQUESTS):
                    t0 = time.monotonic()
                    await client.infer(MODEL, inputs(module, k))
                    latencies.append(time.monotonic() - t0)
                picks = _picks(client, slow)
                await asyncio.sleep(0.8)
                return picks, client.router.dispatcher(MODEL, "interactive").stats().in_flight
            finally:
                await client.close()

        picks, in_flight = asyncio.run(run())
    assert picks >= 3, f"the slow endpoint was picked {picks} times: too few to show hedging"
    slo_s = SLO_MS / 1000.0
    assert max(latencies) < slo_s, f"a request waited for the slow endpoint despite hedging: {sorted(latencies)}"
    assert sum(in_flight) == 0, in_flight
