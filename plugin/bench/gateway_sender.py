"""The scenario's gateway policies: the whole trace sent through a real Envoy (``tritonmix.gateway.Gateway``) by a
plain tritonclient HTTP client, one per replay thread.

    tritonmix-gateway     the gateway with its in-process control plane (AUTO mode): weights, priorities and
                          ejections from the plane's plans every tick
    paper-static-envoy    the same Envoy with the paper's static weights and no plane: the faithful ALB baseline
                          (weighted targets, health checks, retries on connection failures)

A plain client cannot tell which endpoint Envoy chose, so the records carry no endpoints (the cost and the
placement come from the servers' own counters, as for every policy).
"""
from __future__ import annotations

import threading
from typing import Any, List, Optional, Sequence, Tuple

from .senders import make_inputs

__all__ = ["GatewaySender"]


class GatewaySender:
    def __init__(self, fleet: Any, model: str, timeout_s: float,
                 static_weights: Optional[Sequence[float]] = None) -> None:
        import dataclasses

        import tritonclient.http as httpclient

        from ..gateway import Gateway

        self._module = httpclient
        self._gateway = Gateway(dataclasses.replace(fleet, mode="auto"), http_port=0, grpc_port=0, models=[model],
                                static_weights=static_weights, timeout_s=timeout_s).start()
        self._model = model
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._clients: List[Any] = []
        self._lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._module.InferenceServerClient(self._gateway.http_url, network_timeout=self._timeout_s,
                                                        connection_timeout=self._timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def __call__(self) -> Tuple[str, ...]:
        self._client().infer(self._model, make_inputs(self._module))
        return ()

    def decisions(self) -> List[Any]:
        plane = self._gateway.plane
        return list(plane.controller.decisions()) if plane is not None else []

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - a dead connection may fail to close
                    pass
        self._gateway.stop()
