"""The control plane: one Controller for every client of a fleet, and clients that follow it.

    ControlPlane(fleet, listen=..., token=..., replicas=...)   the service (``tritonmix control-plane``): merges
                                         every client's reports (``board.Board``), scrapes each Triton endpoint
                                         once per tick, decides with the same Controller a client runs
                                         in-process, and publishes each Plan to every client (``plane``)
    Follower                             the client side (``control_plane="host:port"`` on every drop-in client, or
                                         ``control_plane:`` in the fleet file): reports, applies plans, falls back
                                         to its own controller while none come (``follower``)
    build_report / parse_report          the report's wire format and its checks (``report``)
    endpoints                            the plane's slots over a discovered set, the set on the wire, plans moved
                                         to a follower's slots by name; ``totals``: the Board's numbers
"""
from __future__ import annotations

from .board import Board
from .follower import Follower, scale_limits
from .plane import ControlPlane
from .report import MAX_REPORT_BYTES, ReportError, build_report, parse_report

__all__ = ["ControlPlane", "Follower", "Board", "scale_limits", "build_report", "parse_report", "ReportError",
           "MAX_REPORT_BYTES"]
