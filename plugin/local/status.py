"""What a local endpoint is doing, from Triton's own endpoints: readiness, /metrics and the model's config.

``probe(...)`` reads three things and never raises for a dead server (it reports ``ready=False``):

- ``/v2/health/ready`` on the HTTP port;
- the metrics port's ``nv_inference_pending_request_count`` (pending), ``nv_inference_request_success`` (served),
  ``nv_inference_request_failure`` and ``nv_inference_request_duration_us`` for the served model; the mean latency
  is duration / success since the server started (Triton's cumulative counters);
- for an EMULATED endpoint, the model config's ``parameters`` (profile, concurrency, slow_down), overridden by the
  live control file the config names (``control_file``, on this machine), so a status taken in another process shows
  the capacity cuts and slow-downs in force.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import urllib.error
import urllib.request
from typing import Dict, Iterable, List, Optional, Sequence

from .. import triton_metrics

__all__ = ["EndpointStatus", "probe", "format_table"]

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class EndpointStatus:
    """One row of ``fleet status``."""

    name: str
    accelerator: str
    price_per_hour: float
    url: str
    ready: bool
    emulated: bool
    pid: Optional[int] = None
    pending: int = 0
    served: int = 0
    failed: int = 0
    mean_latency_ms: Optional[float] = None
    profile: str = ""
    concurrency: Optional[int] = None
    slow_down: Optional[float] = None

    def as_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def _get(url: str, timeout_s: float) -> Optional[bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return None


def _model_parameters(http_url: str, model_name: str, timeout_s: float) -> Dict[str, str]:
    body = _get(f"http://{http_url}/v2/models/{model_name}/config", timeout_s)
    if body is None:
        return {}
    try:
        params = json.loads(body).get("parameters", {})
    except ValueError:
        return {}
    flat = {k: v.get("string_value", "") for k, v in params.items() if isinstance(v, dict)}
    if flat.get("control_file"):
        from ..emulation.repository import read_control  # noqa: PLC0415 - only emulated endpoints have one

        live = read_control(flat["control_file"])
        flat.update({k: str(live[k]) for k in ("concurrency", "slow_down") if k in live})
    return flat


def probe(
    name: str,
    accelerator: str,
    price_per_hour: float,
    http_url: str,
    metrics_url: str,
    model_name: Optional[str],
    pid: Optional[int] = None,
    timeout_s: float = 1.0,
    *,
    emulated: bool = False,
    profile: str = "",
) -> EndpointStatus:
    """Ask one server how it is doing (see the module docstring); ``emulated``/``profile`` label a dead one."""
    ready = _get(f"http://{http_url}/v2/health/ready", timeout_s) is not None
    totals = triton_metrics.scrape(metrics_url, model_name, timeout_s) if ready else None
    params = _model_parameters(http_url, model_name, timeout_s) if ready and model_name else {}
    emulated = params.get("emulated") == "true" if params else emulated
    served = int(totals["success"]) if totals else 0
    mean_ms = totals["duration_us"] / served / 1000.0 if totals and served else None
    return EndpointStatus(
        name=name, accelerator=accelerator, price_per_hour=price_per_hour, url=http_url, ready=ready,
        emulated=emulated, pid=pid,
        pending=int(totals["pending"]) if totals else 0, served=served,
        failed=int(totals["failure"]) if totals else 0, mean_latency_ms=mean_ms,
        profile=params.get("profile", profile),
        concurrency=int(params["concurrency"]) if params.get("concurrency", "").isdigit() else None,
        slow_down=float(params["slow_down"]) if "slow_down" in params else None,
    )


_COLUMNS = ("endpoint", "accelerator", "$/h", "ready", "pending", "served", "mean ms", "conc", "slow", "url", "pid")


def _cells(row: EndpointStatus) -> List[str]:
    accelerator = f"{row.accelerator} (EMULATED {row.profile})" if row.emulated else row.accelerator
    return [
        row.name, accelerator, f"{row.price_per_hour:.4f}", "yes" if row.ready else "NO", str(row.pending),
        str(row.served), "-" if row.mean_latency_ms is None else f"{row.mean_latency_ms:.1f}",
        "-" if row.concurrency is None else str(row.concurrency),
        "-" if row.slow_down is None else f"x{row.slow_down:g}", row.url, str(row.pid or "-"),
    ]


def format_table(rows: Iterable[EndpointStatus]) -> str:
    """A plain-text table; emulated endpoints say so in the accelerator column and in a footnote."""
    rows = list(rows)
    table: Sequence[Sequence[str]] = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    if any(r.emulated for r in rows):
        lines.append("EMULATED: a local Triton python model reproducing the profile's latency and concurrency, "
                     "not the hardware itself")
    return "\n".join(lines)
