"""Triton's Prometheus metrics (``/metrics`` on the metrics port): the one table of the series tritonmix reads and
the one parser, for the controller's scrapes, ``tritonmix fleet status`` and the scenario's sampler.

    SERIES             Triton's (and the emulation's) series name -> the short name used in tritonmix
    parse(text)        {model: {short name: value}} with the sums over every model under the key None; versions
                       and other labels are summed; only the series in SERIES are kept
    fetch(url, t)      the text of ``http://<url>/metrics``, None when it does not answer within t seconds
    scrape(url, model) ``parse(fetch(url))[model]`` with every short name present (0.0 where the server has none);
                       None when the server does not answer
"""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import Dict, Optional

__all__ = ["SERIES", "parse", "fetch", "scrape"]

SERIES = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_request_duration_us": "duration_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_pending_request_count": "pending",
    # the emulated accelerators' own busy time per request (``tritonmix.emulation``): compute time of the slots
    "tritonmix_emulated_service_us": "service_us",
    # ... and how many of its instances hold a parking request (a gauge; ``tritonmix.emulation``'s capacity cuts)
    "tritonmix_emulated_parked": "parked",
}


def parse(text: str) -> Dict[Optional[str], Dict[str, float]]:
    """The series of SERIES per model (Triton's ``model`` label), and their sums over models under None. O(series)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Dict[Optional[str], Dict[str, float]] = {None: {}}
    for family in text_string_to_metric_families(text):
        short = SERIES.get(family.name)
        if short is None:
            continue
        for sample in family.samples:
            if sample.name not in (family.name, family.name + "_total"):
                continue
            totals = out[None]
            totals[short] = totals.get(short, 0.0) + sample.value
            model = sample.labels.get("model")
            if model is not None:
                own = out.setdefault(model, {})
                own[short] = own.get(short, 0.0) + sample.value
    return out


def fetch(metrics_url: str, timeout_s: float = 1.0) -> Optional[str]:
    """``http://<metrics_url>/metrics`` as text; None when unreachable, slow or not 200."""
    try:
        with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=timeout_s) as response:
            return response.read().decode("utf-8", errors="replace") if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return None


def scrape(metrics_url: str, model: Optional[str] = None, timeout_s: float = 1.0) -> Optional[Dict[str, float]]:
    """One model's series (every model's sums when None), each short name present; None when unreachable."""
    text = fetch(metrics_url, timeout_s)
    if text is None:
        return None
    values = dict.fromkeys(SERIES.values(), 0.0)
    values.update(parse(text).get(model, {}))
    return values
