"""Simulated clients reporting to a control plane over HTTP, for ``test_bench_control_plane.py``: COUNT clients in
one asyncio process, each POSTing a 256-endpoint report to ``/v1/sync?wait=0`` once per INTERVAL_S (spread over
the interval), as a following client does, without holding for the plan.

    python benches/plane_reporters.py BASE_URL COUNT INTERVAL_S FLEET_FINGERPRINT N_ENDPOINTS dense|sparse OUT.json

Prints "ready" once every client has reported; stops when its stdin closes and writes {"sent", "ok", "failed",
"late"} (late: a report answered more than one interval after it was sent).
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time


def body(client: int, seq: int, fingerprint: str, n: int, sparse: bool) -> bytes:
    """Dense: every endpoint's counters grow every tick (the worst case). Sparse (after the first report, against
    the previous one): one request per tick lands on one endpoint, as a client at 2 req/s on a 0.5 s tick does."""
    head = {"v": 1, "client": f"http-sim/{client}", "fleet": fingerprint, "seq": seq, "plan_age_s": 0.2,
            "ejected": []}
    if sparse and seq > 1:
        i = (client + seq) % n
        return json.dumps({**head, "base": seq - 1,
                           "endpoint": {"idx": [i], "ok": [seq], "over_slo": [0], "failed": [0]},
                           "keys": [{"model": "sd", "class": "interactive", "arrivals": seq, "idx": [i],
                                     "successes": [seq], "failures": [0], "in_flight": [0], "latency_s": [0.1]}]},
                          separators=(",", ":")).encode()
    ok = [seq + (client + i) % 3 for i in range(n)] if not sparse else [0] * n
    return json.dumps({**head, "endpoint": {"ok": ok, "over_slo": [0] * n, "failed": [0] * n},
                       "keys": [{"model": "sd", "class": "interactive", "arrivals": sum(ok), "successes": ok,
                                 "failures": [0] * n, "in_flight": [0] * n, "latency_s": [0.1] * n}]},
                      separators=(",", ":")).encode()


async def report(session, base: str, k: int, count: int, interval_s: float, fingerprint: str, n: int, sparse: bool,
                 stop: asyncio.Event, tally: dict, first: asyncio.Event, reported: set) -> None:
    await asyncio.sleep(interval_s * k / count)
    seq = 0
    while not stop.is_set():
        seq += 1
        t0 = time.monotonic()
        try:
            async with session.post(f"{base}/v1/sync?wait=0", data=body(k, seq, fingerprint, n, sparse),
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                tally["ok" if resp.status in (200, 204) else "failed"] += 1
        except Exception:  # noqa: BLE001 - counted
            tally["failed"] += 1
        tally["sent"] += 1
        spent = time.monotonic() - t0
        tally["late"] += spent > interval_s
        reported.add(k)
        if len(reported) == count:
            first.set()
        await asyncio.sleep(max(0.0, interval_s - spent))


async def main(base: str, count: int, interval_s: float, fingerprint: str, n: int, sparse: bool, out: str) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    tally = {"sent": 0, "ok": 0, "failed": 0, "late": 0}
    first = asyncio.Event()
    reported: set = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(report(session, base, k, count, interval_s, fingerprint, n, sparse, stop, tally,
                                            first, reported)) for k in range(count)]
        await first.wait()
        print("ready", flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)
    with open(out, "w") as f:
        json.dump(tally, f)


if __name__ == "__main__":
    a = sys.argv
    asyncio.run(main(a[1], int(a[2]), float(a[3]), a[4], int(a[5]), a[6] == "sparse", a[7]))
