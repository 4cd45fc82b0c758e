"""KubernetesSource against FakeApiServer, through the real kubernetes client: list + watch, churn, the protocol's
faults (410, bookmarks, dropped streams, an API server restart), both ways to load credentials, and bad input."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

pytest.importorskip("kubernetes")

from tritonmix.discovery import EndpointState, source_for  # noqa: E402
from tritonmix.errors import ConfigError  # noqa: E402
from tritonmix.fleet import Fleet  # noqa: E402
from tritonmix.k8s import labels  # noqa: E402
from tritonmix.k8s.discovery import KubernetesSource  # noqa: E402
from tritonmix.k8s.fakeapi import FakeApiServer  # noqa: E402
from tritonmix.k8s.pools import PoolError, endpoints_from_slice, pool_from_service  # noqa: E402
from tritonmix.k8s.settings import KubernetesSettings  # noqa: E402

NS = "inference"
INTERVAL_S = 0.5  # the controller's default interval: a change must reach on_change within it
LOGGER = "tritonmix.k8s.discovery"


def service(name: str, price: Any = "0.7582", fleet: str = "sd", **notes: str) -> Dict[str, Any]:
    annotations = {labels.ACCELERATOR_ANNOTATION: "neuron", labels.INSTANCE_TYPE_ANNOTATION: "inf2.xlarge"}
    if price is not None:
        annotations[labels.PRICE_ANNOTATION] = price
    annotations.update(notes)
    return {"kind": "Service", "metadata": {
        "name": name, "namespace": NS, "annotations": annotations,
        "labels": {labels.FLEET_LABEL: fleet, labels.POOL_LABEL: name + "-pool"}}}


def endpoint(pod: str, ip: str, ready: bool = True, terminating: bool = False) -> Dict[str, Any]:
    return {"addresses": [ip], "targetRef": {"kind": "Pod", "name": pod, "namespace": NS},
            "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating}}


def slice_(name: str, svc: str, endpoints: Optional[List[Dict[str, Any]]]) -> Dict[str, Any]:
    return {"kind": "EndpointSlice", "addressType": "IPv4", "endpoints": endpoints,
            "metadata": {"name": name, "namespace": NS, "labels": {labels.SERVICE_NAME_LABEL: svc}},
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}, {"name": "grpc", "port": 8001},
                      {"name": "metrics", "port": 8002}]}


class Recorder:
    """Collects every on_change call and waits for one that satisfies a predicate."""

    def __init__(self) -> None:
        self.calls: List[Tuple[float, Tuple[EndpointState, ...]]] = []
        self._cond = threading.Condition()

    def __call__(self, states: Sequence[EndpointState]) -> None:
        with self._cond:
            self.calls.append((time.monotonic(), tuple(states)))
            self._cond.notify_all()

    @property
    def last(self) -> Dict[str, EndpointState]:
        return {s.name: s for s in self.calls[-1][1]} if self.calls else {}

    def wait(self, predicate: Callable[[Dict[str, EndpointState]], bool], timeout_s: float = 5.0) -> float:
        """Wait for a set that satisfies ``predicate``; the time it arrived."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for at, states in self.calls:
                    if predicate({s.name: s for s in states}):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching set within {timeout_s} s; last: {sorted(self.last)}")
                self._cond.wait(left)


def until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def names(*pods: str) -> Callable[[Dict[str, EndpointState]], bool]:
    wanted = {f"{NS}/{p}" for p in pods}
    return lambda states: set(states) == wanted


@pytest.fixture
def api():
    server = FakeApiServer(token="sekret", bookmark_interval_s=60.0).start()
    yield server
    server.stop()


def settings_for(api: FakeApiServer, **overrides: Any) -> KubernetesSettings:
    values: Dict[str, Any] = dict(namespace=NS, fleet="sd", kubeconfig=str(api.kubeconfig_path()),
                                  backoff_initial_s=0.05, backoff_max_s=0.2, read_timeout_s=5.0)
    values.update(overrides)
    return KubernetesSettings(**values)


@pytest.fixture
def running(api):
    """A source over the fake API with two pools (inf2: p1, p2; g5: g1) already listed."""
    api.apply(service("inf2"))
    api.apply(service("g5", price="1.006", **{labels.CAPACITY_TYPE_ANNOTATION: "spot"}))
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2")]))
    api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1")]))
    recorder = Recorder()
    source = KubernetesSource(settings_for(api), seed=1)
    source.start(recorder)
    recorder.wait(names("p1", "p2", "g1"))
    assert until(lambda: api.open_watches() == 2)
    yield api, source, recorder
    source.stop()


# -- the set and what each endpoint carries ---------------------------------------------------------------------
def test_lists_in_chunks_and_reads_pools_from_services(api):
    for i in range(5):
        api.apply(service(f"pool{i}", price=str(0.5 + i)))
        api.apply(slice_(f"pool{i}-a", f"pool{i}", [endpoint(f"pod{i}", f"10.0.2.{i + 1}")]))
    api.apply(service("other", fleet="not-ours"))  # another fleet's Service: not listed at all
    recorder = Recorder()
    source = KubernetesSource(settings_for(api, page_size=2))
    source.start(recorder)
    try:
        recorder.wait(names(*(f"pod{i}" for i in range(5))))
        lists = api.requests("Service", watch=False)
        assert [r.query.get("limit") for r in lists] == ["2", "2", "2"]
        assert [bool(r.query.get("continue")) for r in lists] == [False, True, True]
        assert all(r.query["labelSelector"] == "tritonmix.io/fleet=sd" for r in lists)
        spec = recorder.last[f"{NS}/pod3"].spec
        assert (spec.url, spec.metrics_url, spec.protocol) == ("10.0.2.4:8000", "10.0.2.4:8002", "http")
        assert (spec.price_per_hour, spec.accelerator, spec.instance_type, spec.pool) == \
            (3.5, "neuron", "inf2.xlarge", "pool3-pool")
        assert len(recorder.calls) == 1  # one whole set once both kinds are listed, not one per chunk
    finally:
        source.stop()


def test_grpc_protocol_takes_the_grpc_port_and_capacity_type(running):
    api, _, recorder = running
    assert recorder.last[f"{NS}/g1"].spec.capacity_type == "spot"
    grpc = Recorder()
    source = KubernetesSource(settings_for(api, protocol="grpc"))
    source.start(grpc)
    try:
        grpc.wait(names("p1", "p2", "g1"))
        assert {s.spec.url for s in grpc.last.values()} == {"10.0.0.1:8001", "10.0.0.2:8001", "10.0.1.1:8001"}
        assert all(s.spec.protocol == "grpc" for s in grpc.last.values())
    finally:
        source.stop()


def test_join_terminate_and_leave_each_within_one_interval(running):
    api, _, recorder = running
    t0 = time.monotonic()
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2"),
                                        endpoint("p3", "10.0.0.3")]))
    assert recorder.wait(names("p1", "p2", "p3", "g1")) - t0 < INTERVAL_S
    assert recorder.last[f"{NS}/p3"].serving

    t0 = time.monotonic()
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2"),
                                        endpoint("p3", "10.0.0.3", terminating=True)]))
    assert recorder.wait(lambda s: f"{NS}/p3" in s and s[f"{NS}/p3"].terminating) - t0 < INTERVAL_S
    p3 = recorder.last[f"{NS}/p3"]
    assert not p3.serving and p3.ready  # still serving its in-flight requests: drains, takes no new ones

    t0 = time.monotonic()
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2")]))
    assert recorder.wait(names("p1", "p2", "g1")) - t0 < INTERVAL_S

    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2", ready=False)]))
    recorder.wait(lambda s: f"{NS}/p2" in s and not s[f"{NS}/p2"].ready and not s[f"{NS}/p2"].terminating)

    api.delete("Service", NS, "g5")  # a pool's Service goes: its endpoints go with it
    recorder.wait(names("p1", "p2"))


def test_a_price_change_replaces_the_spec_in_place(running):
    api, _, recorder = running
    api.apply(service("inf2", price="0.5"))
    recorder.wait(lambda s: s.get(f"{NS}/p1") is not None and s[f"{NS}/p1"].spec.price_per_hour == 0.5)
    assert set(recorder.last) == {f"{NS}/p1", f"{NS}/p2", f"{NS}/g1"}


# -- the protocol's faults ---------------------------------------------------------------------------------------
def test_410_on_an_open_watch_relists_and_catches_up(running):
    api, source, recorder = running
    lists = len(api.requests("EndpointSlice", watch=False))
    api.compact()  # every open watch ends with an ERROR 410 event
    api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1"), endpoint("g2", "10.0.1.2")]))
    recorder.wait(names("p1", "p2", "g1", "g2"))
    assert len(api.requests("EndpointSlice", watch=False)) == lists + 1
    assert until(lambda: source.counters["relists"] == 2)  # both kinds


def test_watch_from_a_compacted_version_gets_410_and_relists(running):
    api, source, recorder = running
    api.apply(service("unrelated", fleet="not-ours"))  # moves the revision; our watches see nothing of it
    api.compact(expire_watches=False)
    api.drop_watches()  # the watches come back from their (now compacted) resourceVersions
    api.apply(slice_("g5-a", "g5", [endpoint("g2", "10.0.1.2")]))
    recorder.wait(names("p1", "p2", "g2"))
    assert until(lambda: len(api.requests("Service", watch=False)) == 2)  # Services relisted after their 410
    assert source.counters["relists"] >= 1


def test_bookmarks_keep_the_watch_resumable_after_compaction(api):
    api.bookmark_interval_s = 0.1
    api.apply(service("inf2"))
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1")]))
    recorder = Recorder()
    source = KubernetesSource(settings_for(api))
    source.start(recorder)
    try:
        recorder.wait(names("p1"))
        moved = api.apply(service("unrelated", fleet="not-ours"))["metadata"]["resourceVersion"]
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # wait for a bookmark past the unrelated change to reach the source
            time.sleep(0.15)
            api.drop_watches()
            time.sleep(0.15)
            resumed = [r.query.get("resourceVersion") for r in api.requests("Service", watch=True)]
            if resumed[-1] == moved:
                break
        assert resumed[-1] == moved, resumed
        api.compact(expire_watches=False)
        api.drop_watches()
        time.sleep(0.5)
        assert source.counters["relists"] == 0
        assert len(api.requests("Service", watch=False)) == 1
        api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2")]))
        recorder.wait(names("p1", "p2"))
    finally:
        source.stop()


def test_a_dropped_stream_resumes_from_its_version_without_a_relist(running):
    api, source, recorder = running
    watches = len(api.requests("EndpointSlice", watch=True))
    last_rv = str(api.resource_version)
    assert api.drop_watches() == 2
    api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1"), endpoint("g2", "10.0.1.2")]))
    recorder.wait(names("p1", "p2", "g1", "g2"))
    resumed = api.requests("EndpointSlice", watch=True)[watches:]
    assert resumed and resumed[0].query["resourceVersion"] == last_rv
    assert len(api.requests("EndpointSlice", watch=False)) == 1
    assert source.counters["relists"] == 0


def test_an_api_server_restart_keeps_the_set_and_catches_up(running):
    api, _, recorder = running
    before = len(recorder.calls)
    api.restart(down_s=0.6)
    api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1"), endpoint("g3", "10.0.1.3")]))
    recorder.wait(names("p1", "p2", "g1", "g3"))
    # the outage itself sent nothing: the set changed once, for the new endpoint
    assert len(recorder.calls) == before + 1


def test_the_backoff_starts_afresh_after_a_good_answer(api):
    api.apply(service("inf2"))
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1")]))
    recorder = Recorder()
    source = KubernetesSource(settings_for(api, backoff_initial_s=0.05, backoff_max_s=2.0), seed=4)
    source.start(recorder)
    try:
        recorder.wait(names("p1"))
        assert until(lambda: api.open_watches() == 2)
        api.restart(down_s=1.5)  # ~5 failed tries: the next delay would be 0.8-1.6 s
        api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1"), endpoint("p2", "10.0.0.2")]))
        recorder.wait(names("p1", "p2"))  # a watch event: a good answer
        assert source.counters["reconnects"] >= 6
        watches = len(api.requests("EndpointSlice", watch=True))
        t0 = time.monotonic()
        api.drop_watches()
        assert until(lambda: len(api.requests("EndpointSlice", watch=True)) > watches)
        assert time.monotonic() - t0 < 0.4  # the first failure's delay (<= 0.05 s), not the sixth's
    finally:
        source.stop()


def test_stop_ends_the_threads_and_sends_nothing_after(running):
    api, source, recorder = running
    source.stop()
    count = len(recorder.calls)
    api.apply(slice_("g5-a", "g5", [endpoint("g9", "10.0.1.9")]))
    time.sleep(0.3)
    assert len(recorder.calls) == count
    assert not any(thread.is_alive() for thread in threading.enumerate() if thread.name.startswith("tritonmix-k8s"))
    assert until(lambda: api.open_watches() == 0)


def test_a_service_relabelled_out_of_the_fleet_takes_its_endpoints_with_it(running):
    api, _, recorder = running
    api.apply(service("g5", fleet="another"))  # the watch sees DELETED: it no longer matches the selector
    recorder.wait(names("p1", "p2"))
    api.apply(service("g5"))
    recorder.wait(names("p1", "p2", "g1"))


def test_the_fake_serves_chunks_from_one_snapshot_and_expires_old_tokens(api):
    """The fake API's own protocol, through the client: a continued list ignores writes after its first chunk; a
    token from before a compaction is 410."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    for i in range(4):
        api.apply(service(f"s{i}"))
    configuration = client.Configuration()
    config.load_kube_config(str(api.kubeconfig_path()), client_configuration=configuration)
    core = client.CoreV1Api(client.ApiClient(configuration))
    first = core.list_namespaced_service(NS, limit=2)
    api.apply(service("s0", price="9"))
    api.delete("Service", NS, "s3")
    rest = core.list_namespaced_service(NS, limit=2, _continue=first.metadata._continue)
    assert [s.metadata.name for s in first.items + rest.items] == ["s0", "s1", "s2", "s3"]
    assert rest.metadata.resource_version == first.metadata.resource_version
    api.compact()
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_service(NS, limit=2, _continue=first.metadata._continue)
    assert exc.value.status == 410


# -- credentials -------------------------------------------------------------------------------------------------
def test_kubeconfig_from_the_environment(api, monkeypatch):
    api.apply(service("inf2"))
    api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1")]))
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig_path()))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    recorder = Recorder()
    fleet = Fleet.from_dict({"endpoints": {"kubernetes": {"namespace": NS, "fleet": "sd"}}})
    source = source_for(fleet)
    assert isinstance(source, KubernetesSource)
    source.start(recorder)
    try:
        recorder.wait(names("p1"))
    finally:
        source.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the fake API's certificate (make test "
                    "installs it with nginx-light)")
def test_in_cluster_config_over_tls(monkeypatch):
    with FakeApiServer(token="pod-token", tls=True) as api:
        api.apply(service("inf2"))
        api.apply(slice_("inf2-a", "inf2", [endpoint("p1", "10.0.0.1")]))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        recorder = Recorder()
        source = KubernetesSource(KubernetesSettings(namespace=NS, fleet="sd"),
                                  serviceaccount_dir=str(api.serviceaccount_dir()))
        source.start(recorder)
        try:
            recorder.wait(names("p1"))
        finally:
            source.stop()


def test_a_wrong_token_is_refused_and_retried_not_announced(api, caplog):
    api.apply(service("inf2"))
    source = KubernetesSource(settings_for(api))  # its kubeconfig holds the token "sekret"
    api.token = "rotated"
    recorder = Recorder()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            source.start(recorder)
            time.sleep(0.4)
            assert recorder.calls == []
            assert "HTTP 401 Unauthorized" in caplog.text
            api.token = "sekret"
            recorder.wait(lambda s: s == {})
    finally:
        source.stop()


def test_missing_kubeconfig_is_a_config_error(tmp_path):
    source = KubernetesSource(KubernetesSettings(namespace=NS, fleet="sd", kubeconfig=str(tmp_path / "none"),
                                                 in_cluster=False))
    with pytest.raises(ConfigError, match="cannot load the kubeconfig"):
        source.start(Recorder())


def test_without_the_kubernetes_package_start_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes raises ImportError
    source = KubernetesSource(KubernetesSettings(namespace=NS, fleet="sd"))
    with pytest.raises(ConfigError, match=r"needs the kubernetes package \(pip install 'tritonmix\[k8s\]'\)"):
        source.start(Recorder())


def test_a_relative_kubeconfig_is_the_fleet_files_neighbour(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(f"endpoints: {{kubernetes: {{namespace: {NS}, fleet: sd, kubeconfig: kube/config}}}}\n")
    assert Fleet.from_file(path).discovery.kubeconfig == str(tmp_path / "kube" / "config")


# -- bad input: logged with what is wrong, nothing else changes ---------------------------------------------------
def _price(recorder: Recorder, pod: str) -> float:
    return recorder.last[f"{NS}/{pod}"].spec.price_per_hour


@pytest.mark.parametrize("bad, message", [
    (service("neu", price=None), "annotation tritonmix.io/price-per-hour is missing"),
    (service("neu", price="cheap"), "annotation tritonmix.io/price-per-hour: 'cheap' is not a number"),
    (service("neu", **{labels.CAPACITY_TYPE_ANNOTATION: "reserved"}),
     "annotation tritonmix.io/capacity-type: 'reserved' is not one of on-demand, spot"),
])
def test_a_bad_new_service_is_logged_and_its_endpoints_not_announced(running, caplog, bad, message):
    api, _, recorder = running
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        api.apply(bad)
        api.apply(slice_("neu-a", "neu", [endpoint("n1", "10.0.3.1")]))
        api.apply(service("g5", price="2.0"))  # a good change after the bad one, on the same watch
        recorder.wait(lambda s: f"{NS}/g1" in s and s[f"{NS}/g1"].spec.price_per_hour == 2.0)
        time.sleep(0.2)
    assert set(recorder.last) == {f"{NS}/p1", f"{NS}/p2", f"{NS}/g1"}
    assert f"Service {NS}/neu: {message}" in caplog.text
    assert "its endpoints are not announced" in caplog.text


def test_a_malformed_annotation_on_a_known_service_keeps_its_last_good_reading(running, caplog):
    api, _, recorder = running
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        api.apply(service("inf2", price="-3"))
        api.apply(service("g5", price="2.0"))
        recorder.wait(lambda s: f"{NS}/g1" in s and s[f"{NS}/g1"].spec.price_per_hour == 2.0)
    assert _price(recorder, "p1") == 0.7582
    assert f"Service {NS}/inf2: annotation tritonmix.io/price-per-hour: '-3' must be a finite number >= 0; " \
           "keeping its last good reading" in caplog.text


def test_a_slice_with_null_endpoints_is_logged_and_changes_nothing_else(running, caplog):
    api, _, recorder = running
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        api.apply(slice_("inf2-b", "inf2", None))
        api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1"), endpoint("g2", "10.0.1.2")]))
        recorder.wait(names("p1", "p2", "g1", "g2"))
    assert f"EndpointSlice {NS}/inf2-b: 'endpoints' is null (no endpoints)" in caplog.text
    assert _price(recorder, "p1") == 0.7582


def test_a_slice_of_an_unknown_service_is_logged_once_and_left_out(running, caplog):
    api, _, recorder = running
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        api.apply(slice_("web-a", "web", [endpoint("w1", "10.0.9.1")]))
        api.apply(slice_("web-a", "web", [endpoint("w1", "10.0.9.1"), endpoint("w2", "10.0.9.2")]))
        api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1"), endpoint("g2", "10.0.1.2")]))
        recorder.wait(names("p1", "p2", "g1", "g2"))
    expected = f"EndpointSlice {NS}/web-a: Service 'web' is not in fleet 'sd'; left out"
    assert caplog.text.count(expected) == 1


def test_a_slice_without_the_protocol_port_is_logged_and_left_out(running, caplog):
    api, _, recorder = running
    bad = slice_("inf2-c", "inf2", [endpoint("p7", "10.0.0.7")])
    bad["ports"] = [{"name": "metrics", "port": 8002}]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        api.apply(bad)
        api.apply(slice_("g5-a", "g5", [endpoint("g1", "10.0.1.1"), endpoint("g2", "10.0.1.2")]))
        recorder.wait(names("p1", "p2", "g1", "g2"))
    assert f"EndpointSlice {NS}/inf2-c: no port named 'http' (ports: ['metrics']); left out" in caplog.text


# -- the readers and the fleet file, without a server ---------------------------------------------------------
def test_slice_reader_conditions_addresses_and_identity():
    raw = slice_("s", "svc", [
        {"addresses": ["fd00::1"], "conditions": {}},                             # nil conditions: ready
        {"addresses": ["10.0.0.5", "10.0.0.6"], "targetRef": {"name": "two"},
         "conditions": {"ready": False, "serving": True, "terminating": True}},
    ])
    got = {e.name: e for e in endpoints_from_slice(raw, "http")}
    assert got[f"{NS}/s/fd00::1"].url == "[fd00::1]:8000" and got[f"{NS}/s/fd00::1"].ready
    two = got[f"{NS}/two/10.0.0.6"]
    assert (two.url, two.ready, two.terminating) == ("10.0.0.6:8000", True, True)
    with pytest.raises(PoolError, match="endpoint 0 has no addresses"):
        endpoints_from_slice(slice_("s", "svc", [{"addresses": []}]), "http")


def test_service_reader_names_the_annotation():
    with pytest.raises(PoolError, match=f"Service {NS}/x: annotation tritonmix.io/accelerator is missing"):
        pool_from_service({"metadata": {"name": "x", "namespace": NS,
                                        "annotations": {labels.PRICE_ANNOTATION: "1"}}})
    with pytest.raises(PoolError, match="max-concurrency: must be an integer >= 1"):
        pool_from_service(service("x", **{labels.MAX_CONCURRENCY_ANNOTATION: "1.5"}))
    pool = pool_from_service(service("x", **{labels.MAX_RPS_ANNOTATION: "2.5", labels.MAX_CONCURRENCY_ANNOTATION: "4"}))
    assert (pool.pool, pool.max_rps, pool.max_concurrency) == ("x-pool", 2.5, 4)


def test_fleet_file_kubernetes_endpoints_round_trip_and_errors():
    fleet = Fleet.from_dict({"slo_ms": 150, "endpoints": {"kubernetes": {
        "namespace": NS, "fleet": "sd", "protocol": "grpc", "page_size": 50}}})
    assert fleet.endpoints == () and fleet.discovery.protocol == "grpc" and fleet.discovery.page_size == 50
    assert Fleet.from_dict(fleet.to_dict()) == fleet
    assert source_for(Fleet.from_urls("127.0.0.1:8000")) is None
    for bad, match in [({"kubernetes": {"fleet": "sd"}}, "field 'namespace' is required"),
                       ({"kubernetes": {"namespace": NS, "fleet": "sd", "port": 1}}, r"unknown field\(s\) port"),
                       ({"kubernetes": {"namespace": "Bad_NS", "fleet": "sd"}}, "is not a namespace name"),
                       ({"kubernetes": {"namespace": NS, "fleet": "sd", "backoff_max_s": 0.1}},
                        "backoff_max_s: must be >= backoff_initial_s"),
                       ({"consul": {}}, "names one source, 'kubernetes'")]:
        with pytest.raises(ConfigError, match=match):
            Fleet.from_dict({"endpoints": bad})


# -- a real cluster (pytest -m k8s; skipped without KUBECONFIG) ---------------------------------------------------
@pytest.mark.k8s
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no KUBECONFIG: the real-cluster check needs one")
def test_discovery_against_a_real_cluster():
    """A selector-less Service and a hand-made EndpointSlice in a namespace of their own: the same join,
    terminating and leave, through a real API server."""
    from kubernetes import client, config

    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    core, discovery = client.CoreV1Api(), client.DiscoveryV1Api()
    namespace = f"tritonmix-discovery-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        svc = service("inf2")
        svc["metadata"]["namespace"] = namespace
        svc["spec"] = {"ports": [{"name": "http", "port": 8000}]}
        core.create_namespaced_service(namespace, svc)

        def real_slice(*eps: Dict[str, Any]) -> Dict[str, Any]:
            body = slice_("inf2-manual", "inf2", [dict(e, targetRef=dict(e["targetRef"], namespace=namespace))
                                                  for e in eps])
            body["metadata"]["namespace"] = namespace
            body["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "tritonmix-test"
            return body

        discovery.create_namespaced_endpoint_slice(namespace, real_slice(endpoint("p1", "10.255.0.1")))
        recorder = Recorder()
        source = KubernetesSource(KubernetesSettings(namespace=namespace, fleet="sd", in_cluster=False,
                                                     kubeconfig=os.environ["KUBECONFIG"]))
        source.start(recorder)
        try:
            ns_names = lambda *pods: (lambda s: set(s) == {f"{namespace}/{p}" for p in pods})  # noqa: E731
            recorder.wait(ns_names("p1"), 30.0)
            discovery.replace_namespaced_endpoint_slice("inf2-manual", namespace, real_slice(
                endpoint("p1", "10.255.0.1", terminating=True), endpoint("p2", "10.255.0.2")))
            recorder.wait(lambda s: ns_names("p1", "p2")(s) and s[f"{namespace}/p1"].terminating, 30.0)
            discovery.delete_namespaced_endpoint_slice("inf2-manual", namespace)
            recorder.wait(ns_names(), 30.0)
        finally:
            source.stop()
    finally:
        core.delete_namespace(namespace)
