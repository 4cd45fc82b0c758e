"""The reliability soak: the faults of tests/reliability/test_faults_under_load.py at the issue's full length.

Not part of ``make test`` or ``make bench`` (it is not a benchmark); run it on purpose:

    TRITONMIX_SOAK=1 .venv/bin/python -m pytest -q -s benches/test_soak.py

``TRITONMIX_SOAK_S`` sets the length of each fault run (default 30 s). What it checks, with 32 concurrent callers
on a local fleet of three real Triton servers (EMULATED accelerators), sync and aio:

    flapping          one endpoint up/down every second (refusing, then losing answers) for the whole run:
                      the servers' extra load stays within the retry budget, < 1% of requests fail
    10x slower        the whole run's SLO attainment (the transient included) >= 99%, the endpoint shed
    kill / restart    each endpoint in turn SIGKILLed and restarted under load: not one client-visible failure
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "reliability"), str(HERE.parent / "tests")]

from reliability_support import FLEET, Load, assert_nothing_in_flight, attempts, client_fleet  # noqa: E402
from test_faults_under_load import flapping_run, slow_endpoint_run  # noqa: E402
from tritonmix import Fleet  # noqa: E402
from tritonmix.local import LocalFleet  # noqa: E402

SOAK_S = float(os.environ.get("TRITONMIX_SOAK_S", "30"))

pytestmark = [
    pytest.mark.skipif(os.environ.get("TRITONMIX_SOAK") != "1", reason="the soak runs with TRITONMIX_SOAK=1"),
    pytest.mark.timeout(int(SOAK_S * 10 + 300)),
]


@pytest.fixture(scope="module")
def local() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(FLEET), ready_timeout_s=120.0) as fleet:
        yield fleet


def _report(name: str, figures: Dict[str, Any]) -> None:
    print(f"\nSOAK {name}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in figures.items()))


@pytest.mark.parametrize("mode", ["sync-http", "aio-grpc"])
def test_soak_flapping(local: LocalFleet, mode: str) -> None:
    figures: Dict[str, Any] = {}
    try:
        flapping_run(local, mode, SOAK_S, figures)
    finally:
        _report(f"flapping {mode}", figures)


@pytest.mark.parametrize("mode", ["sync-http", "aio-grpc"])
def test_soak_slow_endpoint_whole_run_slo(local: LocalFleet, mode: str) -> None:
    result = slow_endpoint_run(local, mode, run_s=SOAK_S)
    _report(f"10x slower {mode}", result)
    assert result["failures_seen"] == 0
    assert result["slow_share_after_shed"] <= 0.05, result
    assert result["slo_attainment_run"] >= 0.99, result


@pytest.mark.parametrize("mode", ["sync-http", "aio-grpc"])
def test_soak_kill_and_restart_each_endpoint(local: LocalFleet, mode: str) -> None:
    protocol = mode.split("-")[1]
    started = time.monotonic()
    with Load(mode, client_fleet(local, protocol), deadline_s=10.0) as load:
        load.wait_requests(96)
        rounds = 0
        while time.monotonic() - started < SOAK_S:
            name = local.fleet.names[rounds % len(local.fleet.names)]
            local.kill(name)
            load.wait_requests(len(load.ledger.all()) + 64)
            local.restart(name)
            load.wait_requests(len(load.ledger.all()) + 64)
            rounds += 1
        ledger = load.stop()
        ledger.check_each_ended_once()
        requests, picks, _ = attempts(load.client)
        failed = ledger.failures()
        _report(f"kill/restart {mode}", {"rounds": rounds, "requests_sent": requests, "failures_seen": len(failed),
                                          "extra_attempts": picks - requests})
        assert not failed, f"{len(failed)} client-visible failures, first: {failed[0].error!r}"
        assert_nothing_in_flight(load.client)
