"""Client processes that replay shares of one trace on one shared schedule.

The parent splits the trace's arrivals round-robin by arrival index (arrival k goes to client k mod N: every client
sees the same load shape at 1/N of the rate, deterministically) and starts one process per client with the
``spawn`` context (a fresh interpreter: no client, thread or lock is inherited from the parent). Each process:

1. builds its own tritonmix client (``TritonmixSender``, as the scenario's tritonmix policies do), seeded with its
   own seed, deciding alone or following a control plane, and sends a few warm-up requests;
2. reports ready and waits for the common start time (``time.monotonic``: one clock for every process of the
   machine), then replays its arrivals open-loop against that start (``loadgen.replay(start_s=...)``);
3. sends back its request records and its controller's read-outs over the replay (``ClientResult``).

A process that fails sends its traceback, which the parent raises; none is left running.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time
import traceback
from typing import Any, List, Optional, Sequence, Tuple

from ..fleet import Fleet
from .loadgen import RequestRecord, replay
from .runner import warm_up
from .senders import TritonmixSender

__all__ = ["ClientJob", "ClientResult", "ControllerCounters", "split_round_robin", "run_client_processes",
           "controller_counters"]

#: how long after the last process is ready the replay starts (time to hand every process the start time)
START_LEAD_S = 0.5
#: how long a process may take to start, build its client and warm up
READY_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class ClientJob:
    """What one client process replays, and how its client is built."""

    index: int
    fleet: Fleet
    mode: str
    model: str
    timeout_s: float
    seed: int
    arrivals_s: Tuple[float, ...]
    control_plane: Optional[str] = None  # "host:port": follow that plane; None: the client's own controller


@dataclasses.dataclass(frozen=True)
class ControllerCounters:
    """Cumulative read-outs of one controller: its ticks and its Triton metrics scrapes per endpoint (None where
    the controller does not expose them)."""

    ticks: Optional[int]
    scrapes: Optional[Tuple[int, ...]]

    def since(self, before: "ControllerCounters") -> "ControllerCounters":
        """The counts between ``before`` and this read-out."""
        ticks = None if self.ticks is None or before.ticks is None else self.ticks - before.ticks
        scrapes = None if self.scrapes is None or before.scrapes is None else tuple(
            a - b for a, b in zip(self.scrapes, before.scrapes))
        return ControllerCounters(ticks, scrapes)


@dataclasses.dataclass(frozen=True)
class ClientResult:
    """One client process's replay: a record per arrival of its share (arrival times on the whole trace's clock),
    its controller's decisions during the replay as (monotonic time, kind, endpoint, summary), and its ticks and
    scrapes during the replay."""

    index: int
    records: Tuple[RequestRecord, ...]
    decisions: Tuple[Tuple[float, str, Optional[str], str], ...]
    counters: ControllerCounters


def split_round_robin(arrivals_s: Sequence[float], clients: int) -> List[Tuple[float, ...]]:
    """Arrival k to client k mod ``clients``."""
    return [tuple(arrivals_s[k::clients]) for k in range(clients)]


def controller_counters(controller: Any) -> ControllerCounters:
    """A controller's ticks (its plan's generation: one plan per tick) and its source's per-endpoint scrape count
    (``controller.source.scrapes``), None where absent (no controller, no plan yet, or no such counter)."""
    if controller is None:
        return ControllerCounters(None, None)
    plan = getattr(controller, "plan", None)
    scrapes = getattr(getattr(controller, "source", None), "scrapes", None)
    return ControllerCounters(None if plan is None else int(plan.generation),
                              None if scrapes is None else tuple(int(x) for x in scrapes))


def _client_main(conn: Any, job: ClientJob) -> None:
    """The body of one client process (module level: the spawn context imports it by name)."""
    sender = None
    try:
        sender = TritonmixSender(job.fleet, job.mode, job.model, job.timeout_s, job.seed, job.control_plane)
        warm_up(sender)
        conn.send(("ready", None))
        start_s = conn.recv()
        time.sleep(max(0.0, start_s - time.monotonic()))
        before = controller_counters(sender.controller)
        records = replay(job.arrivals_s, sender, start_s=start_s)
        counters = controller_counters(sender.controller).since(before)
        decisions = tuple((d.at_s, d.kind, d.endpoint, d.summary) for d in sender.decisions() if d.at_s >= start_s)
        conn.send(("done", ClientResult(job.index, tuple(records), decisions, counters)))
    except BaseException:  # noqa: BLE001 - whatever happened goes to the parent, which raises it
        conn.send(("error", traceback.format_exc()))
    finally:
        if sender is not None:
            sender.close()
        conn.close()


def _expect(conn: Any, index: int, tag: str, timeout_s: float) -> Any:
    if not conn.poll(timeout_s):
        raise RuntimeError(f"client process {index} sent no '{tag}' within {timeout_s:.0f} s")
    try:
        got, payload = conn.recv()
    except EOFError:
        raise RuntimeError(f"client process {index} ended before it sent '{tag}' (its stderr says why)") from None
    if got == "error":
        raise RuntimeError(f"client process {index} failed:\n{payload}")
    return payload


def run_client_processes(jobs: Sequence[ClientJob], on_start: Any, result_timeout_s: float) -> List[ClientResult]:
    """Start one process per job, wait until all are ready, start them together, call ``on_start(start_s)`` (the
    parent's own work on the shared schedule: sampling, events) and return their results, in job order. Every
    process is ended before this returns."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    try:
        for job in jobs:
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_client_main, args=(child_end, job), name=f"bench-client-{job.index}",
                                      daemon=True)
            process.start()
            child_end.close()
            pipes.append(parent_end)
            processes.append(process)
        for job, conn in zip(jobs, pipes):
            _expect(conn, job.index, "ready", READY_TIMEOUT_S)
        start_s = time.monotonic() + START_LEAD_S
        for conn in pipes:
            conn.send(start_s)
        on_start(start_s)
        return [_expect(conn, job.index, "done", result_timeout_s) for job, conn in zip(jobs, pipes)]
    finally:
        for process in processes:
            process.join(timeout=10.0)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in pipes:
            conn.close()
