"""How each policy sends one request of the replay: tritonmix's client, or a baseline picker over tritonclient.

Both send the same request (the SD ensemble's I/O: a prompt, a seed) to the same model, with the same timeout,
over the same protocol (the scenario's ``protocol``). Both return the endpoints their attempts went to, in order (on
failure: as the exception's ``tritonmix_endpoints``), which ``loadgen`` records per request: tritonmix's client
builds its per-endpoint tritonclient clients through ``endpoint_client_factory``, here one that notes each attempt
in the request's list, a context variable (the client runs a hedged request's attempts on its own threads in a copy
of the caller's context, so a hedge is noted too).
"""
from __future__ import annotations

import contextvars
import dataclasses
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from ..fleet import Fleet
from .baselines import Picker

__all__ = ["make_inputs", "grpc_fleet", "TritonmixSender", "BaselineSender"]


def make_inputs(module: Any, prompt: str = "an astronaut riding a horse", seed: int = 0) -> List[Any]:
    """The request every policy sends, built with ``module`` (tritonclient.http or tritonmix.http)."""
    text = module.InferInput("prompt", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    seed_input = module.InferInput("seed", [1], "INT64")
    seed_input.set_data_from_numpy(np.array([seed], dtype=np.int64))
    return [text, seed_input]


def grpc_fleet(fleet: Fleet, grpc_urls: Dict[str, str]) -> Fleet:
    """``fleet`` with each endpoint's URL replaced by its gRPC URL (``grpc_urls`` by endpoint name)."""
    endpoints = tuple(dataclasses.replace(e, url=grpc_urls[e.name], protocol="grpc") for e in fleet.endpoints)
    return dataclasses.replace(fleet, endpoints=endpoints)


#: the endpoints the current request's attempts went to (None: no request of a TritonmixSender is being sent)
_TRIED: "contextvars.ContextVar[Optional[List[str]]]" = contextvars.ContextVar("tritonmix_bench_tried", default=None)


class _Noting:
    """A tritonclient client that appends its endpoint's name to the current request's attempt list (``_TRIED``)
    before each ``infer`` / ``async_infer``; everything else is the wrapped client's."""

    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self._name = name

    def _note(self) -> None:
        tried = _TRIED.get()
        if tried is not None:
            tried.append(self._name)

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return self._client.infer(*args, **kwargs)

    def async_infer(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return self._client.async_infer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _noting_factory(fleet: Fleet, grpc: bool, timeout_s: float) -> Any:
    names = {e.url: e.name for e in fleet.endpoints}
    if grpc:
        import tritonclient.grpc as tc_grpc

        return lambda url: _Noting(tc_grpc.InferenceServerClient(url), names[url])
    import tritonclient.http as tc_http

    return lambda url: _Noting(tc_http.InferenceServerClient(url, concurrency=8, network_timeout=timeout_s,
                                                             connection_timeout=timeout_s), names[url])


class TritonmixSender:
    """tritonmix's drop-in client (HTTP or gRPC, as the fleet's endpoints say) over the whole fleet, in one mode
    (auto, cost or capacity), its router seeded with ``seed``. ``control_plane`` ("host:port"): the client follows
    that control plane's plans instead of deciding alone (the client's ``control_plane=`` keyword)."""

    def __init__(self, fleet: Fleet, mode: str, model: str, timeout_s: float, seed: int = 0,
                 control_plane: Optional[str] = None) -> None:
        self._fleet = dataclasses.replace(fleet, mode=mode)
        following: Dict[str, Any] = {} if control_plane is None else {"control_plane": control_plane}
        grpc = all(e.protocol == "grpc" for e in fleet.endpoints)
        factory = _noting_factory(self._fleet, grpc, timeout_s)
        if grpc:
            import tritonmix.grpc as grpcclient

            self._module = grpcclient
            self._client = grpcclient.InferenceServerClient(fleet=self._fleet, seed=seed,
                                                            endpoint_client_factory=factory, **following)
        else:
            import tritonmix.http as httpclient

            self._module = httpclient
            self._client = httpclient.InferenceServerClient(
                fleet=self._fleet, concurrency=8, network_timeout=timeout_s, connection_timeout=timeout_s,
                seed=seed, endpoint_client_factory=factory, **following)
        self._model = model
        self._timeout_s = timeout_s

    def __call__(self) -> Tuple[str, ...]:
        tried: List[str] = []
        token = _TRIED.set(tried)
        try:
            self._client.infer(self._model, make_inputs(self._module), deadline_s=self._timeout_s)
        except BaseException as exc:
            exc.tritonmix_endpoints = tuple(tried)  # type: ignore[attr-defined]
            raise
        finally:
            _TRIED.reset(token)
        return tuple(tried)

    @property
    def controller(self) -> Any:
        """The client's own controller (None when it runs none)."""
        return self._client.controller

    def decisions(self) -> List[Any]:
        return list(self._client.decisions())

    def close(self) -> None:
        self._client.close()


class BaselineSender:
    """A picker over plain tritonclient HTTP clients (one per endpoint per thread: tritonclient's is not
    thread-safe), retrying once elsewhere when an attempt never reached a server."""

    def __init__(self, fleet: Fleet, picker: Picker, model: str, timeout_s: float) -> None:
        self._grpc = all(e.protocol == "grpc" for e in fleet.endpoints)
        if self._grpc:
            import tritonclient.grpc as grpcclient

            self._module = grpcclient
        else:
            import tritonclient.http as httpclient

            self._module = httpclient
        self._urls = [e.url for e in fleet.endpoints]
        self._names = [e.name for e in fleet.endpoints]
        self._picker = picker
        self._model = model
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._all_clients: List[Any] = []
        self._lock = threading.Lock()

    def _client(self, index: int) -> Any:
        clients: Optional[Dict[int, Any]] = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if index not in clients:
            timeouts = {} if self._grpc else {"network_timeout": self._timeout_s,
                                                "connection_timeout": self._timeout_s}
            client = self._module.InferenceServerClient(self._urls[index], **timeouts)
            clients[index] = client
            with self._lock:
                self._all_clients.append(client)
        return clients[index]

    def __call__(self) -> Tuple[str, ...]:
        tried: Set[int] = set()
        order: List[str] = []
        for attempt in range(2):
            index = self._picker.pick(tried)
            tried.add(index)
            order.append(self._names[index])
            try:
                started = time.monotonic()
                if self._grpc:
                    self._client(index).infer(self._model, make_inputs(self._module), client_timeout=self._timeout_s)
                else:
                    self._client(index).infer(self._model, make_inputs(self._module))
                observe = getattr(self._picker, "observe", None)
                if observe is not None:
                    observe(index, time.monotonic() - started)
                return tuple(order)
            except Exception as exc:  # noqa: BLE001 - classified below
                if attempt == 1 or not _never_reached(exc):
                    exc.tritonmix_endpoints = tuple(order)  # type: ignore[attr-defined]
                    raise
                self._drop_client(index)
            finally:
                self._picker.done(index)

    def _drop_client(self, index: int) -> None:
        clients = getattr(self._local, "clients", {})
        client = clients.pop(index, None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close
                pass

    def close(self) -> None:
        with self._lock:
            for client in self._all_clients:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
            self._all_clients.clear()


def _never_reached(exc: BaseException) -> bool:
    """Connection refused/reset, a socket timeout, or a 503: safe to send elsewhere."""
    if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError, OSError)):
        return True
    status = str(getattr(exc, "status", lambda: "")() or "")
    return status in ("503", "StatusCode.UNAVAILABLE")
