"""A local heterogeneous fleet: one real Triton server per local endpoint of a fleet file, with faults on demand.

::

    with LocalFleet(Fleet.from_file("examples/fleet.yaml")) as local:
        local.fleet                       # the Fleet with every local endpoint's URL filled in
        local.endpoints["inf2-a"].http_url, .grpc_url, .metrics_url, .pid, .profile
        local.kill("inf2-a")              # SIGKILL: unreachable at once
        local.restart("inf2-a")           # same ports: clients holding the URL reconnect
        local.set_capacity("g5-a", 1)     # fewer requests in parallel, server stays up
        local.slow_down("g5-a", 2.0)      # every request takes twice as long
        print(format_table(local.status()))

An endpoint with a ``profile`` serves an EMULATED model (``tritonmix.emulation``) from a generated repository under
``work_dir``; one with only a ``model_repository`` serves that repository as it is. Every server runs in explicit
model control mode. An emulated endpoint changes capacity and speed through its control file, which the model
re-reads within ~50 ms, and a capacity cut parks the instances it takes away with requests of our own that hold them
until the capacity changes again (``tritonmix.emulation.model``): nothing is reloaded, no request is held, and the
requests beyond the capacity wait in Triton's queue as on real hardware. A capacity above the model's instance count
is the one change that needs a reload. A real repository changes capacity by reloading with a new instance count.

Servers are started from the fleet's own worker threads, which live as long as the fleet: the servers' parent-death
signal (``PR_SET_PDEATHSIG``) follows the starting *thread*, so a restart asked for from a short-lived thread must
not start the server itself.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import tritonclient.http as httpclient

from ..emulation.profiles import Profile, validate_profile
from ..emulation.repository import (PARK_PROMPT, EmulationSettings, write_config, write_control,
                                    write_emulated_repository)
from ..errors import ConfigError, PortInUse
from ..fleet import EndpointSpec, Fleet
from .capacity import reload_model, set_instance_count
from .server import LocalTritonServer
from .status import EndpointStatus, probe

__all__ = ["LocalEndpoint", "LocalFleet"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LocalEndpoint:
    """One running (or killed) local endpoint: its spec, server, and for emulation its settings in force."""

    spec: EndpointSpec
    repository: Path
    model_name: Optional[str]
    server: LocalTritonServer
    emulation: Optional[EmulationSettings] = None
    capacity: Optional[int] = None  # real repositories: the instance count set by set_capacity
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    parks: List[threading.Thread] = dataclasses.field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def emulated(self) -> bool:
        return self.emulation is not None

    @property
    def profile(self) -> Optional[Profile]:
        return None if self.emulation is None else self.emulation.profile

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

    @property
    def url(self) -> str:
        return self.grpc_url if self.spec.protocol == "grpc" else self.http_url

    @property
    def pid(self) -> Optional[int]:
        return self.server.pid if self.server.running else None

    @property
    def running(self) -> bool:
        return self.server.running


class LocalFleet:
    """Real Triton servers for the local endpoints of ``fleet`` (see the module docstring)."""

    def __init__(self, fleet: Fleet, *, work_dir: Union[str, Path, None] = None, host: str = "127.0.0.1",
                 ready_timeout_s: float = 120.0) -> None:
        self._source = fleet
        self.fleet = fleet
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.endpoints: Dict[str, LocalEndpoint] = {}
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None

    # -- life cycle --------------------------------------------------------------------------------------------
    def __enter__(self) -> "LocalFleet":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> "LocalFleet":
        """Generate repositories, start every local server in parallel, and fill in the fleet's URLs."""
        local = [spec for spec in self._source if spec.is_local]
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="tritonmix-fleet-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(max(1, len(local)), "tritonmix-fleet")
        try:
            self.endpoints = {spec.name: self._prepare(spec) for spec in local}
            futures = [self._executor.submit(self._start_server, ep) for ep in self.endpoints.values()]
            for future in futures:
                future.result()
        except BaseException:
            self.close()
            raise
        self.fleet = self._source.with_urls({name: ep.url for name, ep in self.endpoints.items()},
                                            {name: ep.metrics_url for name, ep in self.endpoints.items()})
        logger.info("local fleet up: %s", ", ".join(f"{n}={ep.http_url}" for n, ep in self.endpoints.items()))
        return self

    def _prepare(self, spec: EndpointSpec) -> LocalEndpoint:
        assert self.work_dir is not None
        if spec.profile is not None:
            settings = EmulationSettings(spec.name, validate_profile(spec.profile), self._source.time_scale)
            model = self._source.emulated_model
            repository = write_emulated_repository(self.work_dir / spec.name, model, settings)
            server_id = f"tritonmix-EMULATED-{spec.name}"
        else:
            settings, model = None, None
            repository = Path(str(spec.model_repository))
            server_id = f"tritonmix-{spec.name}"
        server = self._new_server(repository, ports=None, server_id=server_id)
        return LocalEndpoint(spec, repository, model, server, emulation=settings)

    def _new_server(self, repository: Path, ports: Optional[Dict[str, int]], server_id: str) -> LocalTritonServer:
        ports = ports or {kind: 0 for kind in ("http", "grpc", "metrics")}
        return LocalTritonServer(
            repository, ports["http"] or None, ports["grpc"] or None, ports["metrics"] or None,
            host=self.host, model_control_mode="explicit", load_models=("*",),
            extra_args=(f"--id={server_id}",), ready_timeout_s=self.ready_timeout_s,
        )

    def _start_server(self, endpoint: LocalEndpoint) -> None:
        try:
            endpoint.server.start()
        except PortInUse:  # another process took a port we picked: once more with fresh ones
            endpoint.server = self._new_server(endpoint.repository, None, _server_id(endpoint.server))
            endpoint.server.start()

    def close(self) -> None:
        """Stop every server (gracefully, in parallel), then the worker threads; remove generated repositories."""
        for endpoint in self.endpoints.values():
            self._unpark(endpoint)
        running = [ep for ep in self.endpoints.values() if ep.server.running]
        threads = [threading.Thread(target=ep.server.stop, name=f"stop-{ep.name}") for ep in running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for endpoint in self.endpoints.values():
            endpoint.server.kill()  # reaps and removes /dev/shm regions of any server that died on its own
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._own_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    # -- faults ------------------------------------------------------------------------------------------------
    def _endpoint(self, name: str) -> LocalEndpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            raise KeyError(f"no local endpoint named {name!r} (have: {', '.join(self.endpoints)})") from None

    def kill(self, name: str) -> None:
        """SIGKILL the endpoint's server: its URL refuses connections at once."""
        endpoint = self._endpoint(name)
        with endpoint.lock:
            logger.info("fault: kill %s (pid %s)", name, endpoint.server.pid)
            endpoint.server.kill()

    def freeze(self, name: str) -> None:
        """SIGSTOP the endpoint's server (and its model processes): its connections accept and nothing answers, as
        a stalled host or a long GC pause; ``thaw(name)`` resumes it."""
        endpoint = self._endpoint(name)
        with endpoint.lock:
            logger.info("fault: freeze %s (pid %s)", name, endpoint.server.pid)
            endpoint.server.freeze()

    def thaw(self, name: str) -> None:
        """SIGCONT a server frozen by ``freeze``: the requests sent meanwhile are served."""
        endpoint = self._endpoint(name)
        with endpoint.lock:
            logger.info("fault: thaw %s (pid %s)", name, endpoint.server.pid)
            endpoint.server.thaw()

    def stop(self, name: str) -> None:
        """Graceful stop (SIGTERM; Triton finishes in-flight requests, 5-10 s)."""
        endpoint = self._endpoint(name)
        with endpoint.lock:
            logger.info("fault: stop %s (pid %s)", name, endpoint.server.pid)
            self._unpark(endpoint)  # a graceful stop waits for every request, ours too
            endpoint.server.stop()

    def restart(self, name: str) -> None:
        """Stop the server if it runs, then start it again on the same ports with the settings in force."""
        endpoint = self._endpoint(name)
        with endpoint.lock:
            if endpoint.server.running:
                self._unpark(endpoint)
                endpoint.server.stop()
            else:
                endpoint.server.kill()  # reap one that died on its own: its stubs and /dev/shm regions with it
            old = endpoint.server
            endpoint.server = self._new_server(endpoint.repository, dict(old.ports), _server_id(old))
            assert self._executor is not None, "the fleet is closed"
            self._executor.submit(endpoint.server.start).result()
            if endpoint.capacity is not None:
                set_instance_count(endpoint.http_url, endpoint.capacity)
            if endpoint.emulation is not None:
                self._park(endpoint)  # the cut in force survives the restart
            logger.info("fault: restarted %s (pid %s) on %s", name, endpoint.server.pid, endpoint.http_url)

    def set_capacity(self, name: str, concurrency: int) -> None:
        """Serve at most ``concurrency`` requests in parallel; the server stays up (emulated: at once, through the
        control file; a real repository: a model reload with that many instances)."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"set_capacity: concurrency {concurrency!r} must be an integer >= 1")
        endpoint = self._endpoint(name)
        with endpoint.lock:
            if endpoint.emulation is not None:
                self._apply_emulation(endpoint, concurrency=concurrency)
            else:
                endpoint.capacity = concurrency
                set_instance_count(endpoint.http_url, concurrency)
            logger.info("fault: %s capacity set to %d", name, concurrency)

    def slow_down(self, name: str, factor: float) -> None:
        """Multiply the emulated latency by ``factor`` (1.0 restores the profile) from the next request on;
        requests being served finish at the old speed. Emulated endpoints only."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ConfigError(f"slow_down: factor {factor!r} must be a number > 0")
        endpoint = self._endpoint(name)
        if endpoint.emulation is None:
            raise ConfigError(f"slow_down: endpoint {name!r} serves a real model repository, not an emulated profile")
        with endpoint.lock:
            self._apply_emulation(endpoint, slow_down=float(factor))
            logger.info("fault: %s slowed down x%g", name, factor)

    def _apply_emulation(self, endpoint: LocalEndpoint, **changes: object) -> None:
        """New emulated settings: the control file only, unless the instance count must grow (config + reload).
        The instance count never shrinks, so capacity given back later needs no reload either."""
        old = endpoint.emulation
        assert old is not None and endpoint.model_name is not None
        new = dataclasses.replace(old, **changes)
        new = dataclasses.replace(new, instances=max(old.instance_count, new.effective_concurrency))
        if new.effective_concurrency != old.effective_concurrency:
            new = dataclasses.replace(new, park_epoch=old.park_epoch + 1)  # the old parking requests leave
        endpoint.emulation = new
        if new.instance_count == old.instance_count:
            write_control(endpoint.repository, endpoint.model_name, new)
        else:
            write_config(endpoint.repository, endpoint.model_name, new)
            if endpoint.server.running:
                reload_model(endpoint.http_url, endpoint.model_name)
        if new.park_epoch != old.park_epoch:
            self._park(endpoint)

    def _park(self, endpoint: LocalEndpoint) -> None:
        """Hold the instances above the capacity in force with parking requests of the current epoch."""
        settings = endpoint.emulation
        assert settings is not None and endpoint.model_name is not None
        endpoint.parks = [thread for thread in endpoint.parks if thread.is_alive()]
        for k in range(settings.instance_count - settings.effective_concurrency):
            thread = threading.Thread(target=_hold_instance, name=f"park-{endpoint.name}-{k}", daemon=True,
                                      args=(endpoint.http_url, endpoint.model_name, settings.park_epoch))
            thread.start()
            endpoint.parks.append(thread)

    def _unpark(self, endpoint: LocalEndpoint, timeout_s: float = 2.0) -> None:
        """Let every parking request go (a new epoch, same settings) and wait for their threads."""
        if endpoint.emulation is None or not endpoint.parks:
            return
        assert endpoint.model_name is not None
        endpoint.emulation = dataclasses.replace(endpoint.emulation, park_epoch=endpoint.emulation.park_epoch + 1)
        write_control(endpoint.repository, endpoint.model_name, endpoint.emulation)
        for thread in endpoint.parks:
            thread.join(timeout_s)
        endpoint.parks = []

    # -- observation -------------------------------------------------------------------------------------------
    def parks_out(self, name: str) -> int:
        """Parking requests of endpoint ``name`` sent and not yet returned (queued at its server or holding an
        instance; the server's ``tritonmix_emulated_parked`` gauge counts the latter)."""
        return sum(thread.is_alive() for thread in self.endpoints[name].parks)

    def status(self) -> List[EndpointStatus]:
        """One row per local endpoint, from Triton's own readiness, /metrics and model config."""
        return [
            probe(ep.name, ep.spec.accelerator, ep.spec.price_per_hour, ep.http_url, ep.metrics_url,
                  ep.model_name, ep.pid, emulated=ep.emulated, profile=ep.profile.name if ep.profile else "")
            for ep in self.endpoints.values()
        ]

    def __repr__(self) -> str:
        return f"LocalFleet({', '.join(f'{n}={ep.http_url}' for n, ep in self.endpoints.items())})"


def _hold_instance(http_url: str, model_name: str, epoch: int) -> None:
    """One parking request: it returns (as an error) when the park epoch changes or the server goes away."""
    prompt = httpclient.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([PARK_PROMPT], dtype=np.object_))
    seed = httpclient.InferInput("seed", [1], "INT64")
    seed.set_data_from_numpy(np.array([epoch], dtype=np.int64))
    client = httpclient.InferenceServerClient(http_url, connection_timeout=5.0, network_timeout=24 * 3600.0)
    try:
        client.infer(model_name, [prompt, seed])
    except Exception:  # noqa: BLE001 - released (an error response by design), or the server is gone
        pass
    finally:
        client.close()


def _server_id(server: LocalTritonServer) -> str:
    for arg in server.extra_args:
        if arg.startswith("--id="):
            return arg[len("--id="):]
    return "tritonmix"

