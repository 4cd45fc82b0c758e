"""The controller on a live local fleet (real Triton servers, EMULATED accelerators), through tritonmix.http.

A cheap slow pool and an expensive fast pool: at low load nearly all traffic goes to the cheap pool within the SLO;
when the cheap pool's server is killed, its weight drops to 0 within one interval and no request fails.
"""
from __future__ import annotations

import time
from typing import Iterator, List

import numpy as np
import pytest

import tritonmix.http as httpclient
from tritonmix import Fleet
from tritonmix.local import LocalFleet

INTERVAL_S = 0.25
FLEET = {
    "slo_ms": 400,
    "time_scale": 0.1,
    "controller": {"interval_s": INTERVAL_S, "dwell_s": 0.5},  # time constants scaled with the fleet (x0.1)
    "endpoints": [  # cheap: 67 ms, 2 at a time (~30 rps); dear: 51 ms, 2 at a time
        {"name": "cheap", "accelerator": "neuron", "price_per_hour": 0.7582,
         "profile": {"base": "inf2.xlarge", "concurrency": 2}},
        {"name": "dear", "accelerator": "neuron", "price_per_hour": 1.3438,
         "profile": {"base": "trn1.2xlarge", "concurrency": 2}},
    ],
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(FLEET)) as local:
        yield local


def _inputs() -> List[httpclient.InferInput]:
    prompt = httpclient.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"a lighthouse"], dtype=object))
    return [prompt]


def _paced(client: httpclient.InferenceServerClient, rps: float, duration_s: float) -> List[float]:
    """One request at a time every 1/rps seconds (far below either pool's capacity); latencies."""
    latencies, end = [], time.monotonic() + duration_s
    while time.monotonic() < end:
        started = time.monotonic()
        client.infer("stable_diffusion", _inputs())
        latencies.append(time.monotonic() - started)
        time.sleep(max(0.0, 1.0 / rps - (time.monotonic() - started)))
    return latencies


def test_low_load_goes_to_the_cheap_pool_then_a_death_is_routed_around(fleet: LocalFleet) -> None:
    client = httpclient.InferenceServerClient(fleet=fleet.fleet, seed=1)
    try:
        _paced(client, rps=8.0, duration_s=2.0)  # learn
        dispatcher = client.router.dispatchers()[("stable_diffusion", "interactive")]
        before = dispatcher.stats().picks
        latencies = _paced(client, rps=8.0, duration_s=3.0)
        picks = [after - b for after, b in zip(dispatcher.stats().picks, before)]
        assert picks[0] >= 0.9 * sum(picks), f"cheap pool got {picks[0]} of {sum(picks)}"
        assert max(latencies) <= 0.4
        fleet.kill("cheap")
        killed_at = time.monotonic()
        while client._controller.snapshot().endpoints[0].interactive_weight > 0:
            assert time.monotonic() - killed_at < 2 * INTERVAL_S + 0.5, "weight not 0 within an interval"
            time.sleep(0.02)
        _paced(client, rps=8.0, duration_s=1.0)  # every request served by the other pool (infer raises otherwise)
        assert any("cheap" in str(d) for d in client.decisions())
    finally:
        client.close()
