"""xDS for the gateway's Envoy from files: ``FileXds`` turns plans into CDS, RDS and per-cluster EDS files in one
folder that Envoy watches.

Why files and not gRPC ADS or REST polling: Envoy is our own child process on the same host, so a file is the
shortest path. Every file is written beside its target and renamed over it (atomic: Envoy never reads half a file),
and Envoy's ``watched_directory`` (inotify) reloads on the rename at once: a push with no server, no protobuf stack
and no polling delay in our process. A config Envoy refuses shows in its admin stats (``update_rejected``), which
``Gateway`` reads back.

Each file lies in a folder of its own (``cds/``, ``rds/``, ``eds-<cluster>/``): Envoy reloads every source that
watches a folder when any file is moved into it, so one shared folder made each EDS write reload CDS, RDS and every
other EDS file too (on a one-endpoint gateway, 8 reloads of each per second at a 0.5 s tick).

Writes, in an order that never routes to a missing cluster: the EDS files of new clusters, then CDS, then RDS.
A file is rewritten only when what Envoy acts on changed: a plan that moves no weight, priority or health (most
ticks of a steady fleet) writes nothing, and Envoy reloads nothing. An EDS file carries the generation of the plan
that wrote it (``version_info`` and each endpoint's ``tritonmix.generation``), so Envoy's admin shows which plan's
content it holds; ``held`` maps that to the newest plan applied since with the same content
(``Gateway.envoy_generation``).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from ..controller.model import INTERACTIVE
from ..controller.plan import Plan
from .config import (NO_LIMIT, GatewaySettings, Upstream, cluster_name, clusters, limit_runtime, load_assignment,
                     planned_count, route_config)

__all__ = ["FileXds"]


class FileXds:
    """The xDS folder of one Envoy (module docstring). ``models``: the HTTP models that get a route and a cluster
    of their own (a plan's per-model weights reach them; other models use the default weights)."""

    def __init__(self, folder: Path, upstreams: Sequence[Upstream], models: Sequence[str],
                 settings: GatewaySettings) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.upstreams = tuple(upstreams)
        self.models = tuple(models)
        self.settings = settings
        self.cds_path = self.folder / "cds" / "cds.json"
        self.rds_path = self.folder / "rds" / "rds.json"
        self._written: Dict[Path, str] = {}
        #: per EDS file: its content without the generation stamp, and the stamp it was written with
        self._material: Dict[Path, str] = {}
        self._stamped: Dict[str, str] = {}
        self.writes = 0
        self._lock = threading.Lock()
        self.generation = 0
        #: per capped model, how many endpoints its priority 0 holds (its route tries each once)
        self._planned: Dict[str, int] = {}

    def eds_path(self, cluster: str) -> str:
        return str(self.folder / f"eds-{cluster}" / "eds.json")

    def _write(self, path: Path, value: Dict[str, Any]) -> bool:
        text = json.dumps(value, sort_keys=True)
        if self._written.get(path) == text:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        self._written[path] = text
        self.writes += 1
        return True

    def held(self, cluster: str, version: str) -> str:
        """The newest plan generation whose content for ``cluster`` Envoy holds when its admin shows ``version``
        (the stamp of the file Envoy read): the generation applied last when that file is still the one written
        (the plans since changed nothing there), else ``version`` itself."""
        with self._lock:
            return str(self.generation) if self._stamped.get(cluster) == version else version

    def initial(self) -> None:
        """Files before Envoy starts: every endpoint available, equal weights."""
        n = len(self.upstreams)
        self.apply_weights({None: (1.0,) * n, **{m: (1.0,) * n for m in self.models}}, (True,) * n, "0")
        self._write(self.cds_path, clusters(self.models, self.settings, self.eds_path, str(self.folder),
                                            self.upstreams))
        self._write(self.rds_path, route_config(self.models, self.settings, self._planned))

    def apply(self, plan: Plan) -> None:
        """Write ``plan``'s weights and availability (its interactive weights: the gateway cannot tell a batch
        request from an interactive one; a batch client should say so by using its own tritonmix client). A priority
        route is written as the proportional route it was made from (``Plan.proportional``): Envoy's overflow here
        goes to every available endpoint by weight, where a priority's small weights would reach pools the plan
        does not load (the CPU pool) as often as its own last tier."""
        plan = plan.proportional()
        if plan.endpoints != tuple(u.name for u in self.upstreams):
            raise ValueError(f"the plan names endpoints {list(plan.endpoints)[:4]}..., the gateway serves "
                             f"{[u.name for u in self.upstreams][:4]}...")
        weights = {None: plan.weights("", INTERACTIVE), **{m: plan.weights(m, INTERACTIVE) for m in self.models}}
        # a plan with every endpoint out (panic) leaves them all in: Envoy's own checks then decide
        available = plan.available if any(plan.available) and not plan.panic else (True,) * len(plan.available)
        with self._lock:
            self._apply_weights(weights, available, str(plan.generation))
            self.generation = plan.generation

    def limits(self, plan: Plan) -> Dict[str, int]:
        """The runtime values of every capped model cluster's caps under ``plan`` (``config.limit_runtime``: the
        plan's interactive in-flight limit, NO_LIMIT where it sets none); empty without ``enforce_limits``."""
        if not self.settings.enforce_limits:
            return {}
        plan = plan.proportional()  # the limits that go with the weights ``apply`` writes
        out = {}
        for model in self.models:
            for u, limit in zip(self.upstreams, plan.limits(model)):
                out[limit_runtime(model, u.name)] = limit if limit > 0 else NO_LIMIT
        return out

    def apply_weights(self, weights: Dict[Optional[str], Sequence[float]], available: Sequence[bool],
                      version: str) -> None:
        with self._lock:
            self._apply_weights(weights, available, version)

    def _apply_weights(self, weights: Dict[Optional[str], Sequence[float]], available: Sequence[bool],
                       version: str) -> None:
        for model, w in weights.items():
            for protocol in (("http", "grpc") if model is None else ("http",)):
                name = cluster_name(protocol, model)
                capped = model if model is not None and self.settings.enforce_limits else None
                path = Path(self.eds_path(name))
                material = json.dumps(load_assignment(name, protocol, self.upstreams, w, available, "", capped),
                                      sort_keys=True)
                if self._material.get(path) == material:
                    continue  # the same weights, priorities and health: Envoy has nothing to reload
                self._write(path, load_assignment(name, protocol, self.upstreams, w, available, version, capped))
                self._material[path] = material
                self._stamped[name] = version
        if self.settings.enforce_limits:  # each capped route tries every planned endpoint once
            planned = {m: planned_count(weights.get(m, ()), available) for m in self.models}
            if planned != self._planned:
                self._planned = planned
                if self.rds_path in self._written:
                    self._write(self.rds_path, route_config(self.models, self.settings, planned))

    def files(self) -> Tuple[str, ...]:
        return tuple(sorted(str(p) for p in self._written))
