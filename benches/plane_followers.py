"""Live followers of a control plane for ``test_bench_control_plane.py``: COUNT long-poll subscribers in one
asyncio process, each looping on ``GET /v1/plan?after=G&epoch=E`` and stamping every plan it receives with
``time.monotonic()`` (the same clock as the plane's process on this machine). A follower reads only the answer's
tail (generation, epoch), not the plan: one process parsing 100 plans of 256 endpoints in turn would stamp the
last ones late by the parsing of the others, which a real client (one plan per process) never pays.

    python benches/plane_followers.py BASE_URL COUNT OUT.json

Prints "ready" once every follower holds a plan; stops when its stdin closes and writes
{"receipts": [[follower, generation, t], ...]}.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time


async def follow(session, base: str, k: int, stop: asyncio.Event, receipts: list, first: asyncio.Event,
                 holding: list) -> None:
    after, epoch = 0, ""
    while not stop.is_set():
        url = f"{base}/v1/plan?after={after}&epoch={epoch}&wait=2"
        async with session.get(url) as resp:
            if resp.status != 200:
                continue
            body = await resp.read()
        t = time.monotonic()
        tail = json.loads(b"{" + body[body.rindex(b',"share":') + 1:])
        after, epoch = tail["generation"], tail["epoch"]
        receipts.append((k, after, t))
        if not holding[k]:
            holding[k] = True
            if all(holding):
                first.set()


async def main(base: str, count: int, out: str) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    receipts: list = []
    holding = [False] * count
    first = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(follow(session, base, k, stop, receipts, first, holding)) for k in range(count)]
        await first.wait()
        print("ready", flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)
    with open(out, "w") as f:
        json.dump({"receipts": receipts}, f)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
