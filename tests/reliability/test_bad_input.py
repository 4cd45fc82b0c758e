"""Bad input, in one table per surface: each case gets one clear error naming what is wrong; nothing is written and
nothing is lost. Cases already pinned elsewhere are not repeated: fleet files (tests/test_fleet_file.py), dispatcher
argument checks (tests/test_dispatch_core.py), exporter errors (tests/test_export_errors.py). Here: the gaps, the
server's errors counted on the servers themselves, and property tests (hypothesis) for the fleet-file parser and the
dispatcher API.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

import tritonmix.grpc
import tritonmix.http
from reliability_support import MODEL, FlappingProxy, client_fleet, inputs
from tritonmix import ConfigError, Fleet
from tritonmix.cli import main
from tritonmix.dispatch_core import DispatchError, _dispatch_py
from tritonmix.local import LocalFleet

try:
    from tritonmix.dispatch_core import _dispatch_c
except ImportError:  # no compiled build: the python twin only (tests/test_dispatch_core.py fails that under make)
    _dispatch_c = None

pytestmark = pytest.mark.timeout(180)

BUILDS = [_dispatch_py] + ([_dispatch_c] if _dispatch_c is not None else [])

# ---- fleet files --------------------------------------------------------------------------------------------------

EP = "{name: a, accelerator: gpu, price_per_hour: 1.0, url: '127.0.0.1:8000'}"
FLEET_CASES = [
    ("empty file", "", r"a fleet is a mapping with an 'endpoints' list, got NoneType"),
    ("empty fleet", "endpoints: []", r"fleet: 'endpoints' must be a non-empty list"),
    ("endpoints an unknown source", "endpoints: {a: 1}", r"fleet: 'endpoints' as a mapping names one source, 'kubernetes' \(got: a\)"),
    ("endpoints a scalar", "endpoints: 3", r"fleet: 'endpoints' must be a non-empty list"),
    ("endpoint not a mapping", "endpoints: [a]", r"endpoint 0: must be a mapping, got str"),
    ("unknown key", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h:1', weight: 3}]",
     r"endpoint 'a': unknown field\(s\) weight"),
    ("duplicate name", f"endpoints: [{EP}, {EP}]", r"endpoint 'a': duplicate name \(endpoints 0 and 1\)"),
    ("negative price", "endpoints: [{name: a, accelerator: gpu, price_per_hour: -0.01, url: 'h:1'}]",
     r"endpoint 'a': field 'price_per_hour': -0.01 must be >= 0"),
    ("infinite price", "endpoints: [{name: a, accelerator: gpu, price_per_hour: .inf, url: 'h:1'}]",
     r"endpoint 'a': field 'price_per_hour': inf is not a finite number"),
    ("url with path", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h:1/v2'}]",
     r"endpoint 'a': field 'url': 'h:1/v2' is not host:port"),
    ("url port zero", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h:0'}]",
     r"endpoint 'a': field 'url': 'h:0' is not host:port with a port in 1..65535"),
    ("url bad host", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h_o st:80'}]",
     r"endpoint 'a': field 'url': 'h_o st:80' is not host:port"),
    ("metrics_url with scheme", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h:1', "
                                "metrics_url: 'http://h:2'}]", r"endpoint 'a': field 'metrics_url'"),
    ("negative max_rps", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h:1', max_rps: -2}]",
     r"endpoint 'a': field 'max_rps': -2 must be > 0"),
    ("bool concurrency", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, url: 'h:1', "
                         "max_concurrency: true}]", r"endpoint 'a': field 'max_concurrency': True must be"),
    ("negative slo", f"slo_ms: -5\nendpoints: [{EP}]", r"fleet: field 'slo_ms': -5 must be > 0"),
    ("controller share > 1", f"controller: {{retry_budget_share: 1.5}}\nendpoints: [{EP}]",
     r"controller.retry_budget_share: 1.5 must be in \[0, 1\]"),
    ("controller negative retries", f"controller: {{max_retries: -1}}\nendpoints: [{EP}]",
     r"controller.max_retries: -1 must be an integer >= 0"),
]


@pytest.mark.parametrize("text, message", [pytest.param(t, m, id=i) for i, t, m in FLEET_CASES])
def test_bad_fleet_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        Fleet.from_file(path)
    assert "\n" not in str(info.value)
    assert path.read_text() == text + "\n" and sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


@pytest.mark.parametrize("module", [tritonmix.http, tritonmix.grpc], ids=["http", "grpc"])
@pytest.mark.parametrize("kwargs, message", [
    ({}, "give url="),
    ({"url": "h:1,h:1"}, "duplicate name"),
    ({"url": "h:1,nope"}, "'nope' is not host:port"),
    ({"url": "/nonexistent/fleet.yaml"}, "does not exist"),
])
def test_clients_refuse_bad_urls_before_any_request(module: Any, kwargs: Dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        module.InferenceServerClient(**kwargs)


def test_a_client_refuses_a_fleet_of_the_other_protocol() -> None:
    fleet = Fleet.from_urls("127.0.0.1:1", protocol="grpc")
    with pytest.raises(ConfigError, match="are not http endpoints"):
        tritonmix.http.InferenceServerClient(fleet=fleet)


_text = st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S", "Zs"]), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=True), _text)
_endpoint = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "b", "g5-a"]), _scalar)},
    optional={"url": st.one_of(st.sampled_from(["127.0.0.1:8000", "h:1", "[::1]:9"]), _scalar),
              "accelerator": st.one_of(st.just("gpu"), _scalar),
              "price_per_hour": _scalar, "protocol": st.one_of(st.sampled_from(["http", "grpc"]), _scalar),
              "max_rps": _scalar, "max_concurrency": _scalar, "capacity_type": _scalar,
              "metrics_url": _scalar, "colour": _scalar})
_fleet = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=2),
    st.fixed_dictionaries({"endpoints": st.one_of(st.lists(_endpoint, max_size=4), _scalar)},
                          optional={"slo_ms": _scalar, "mode": st.one_of(st.just("cost"), _scalar),
                                    "time_scale": _scalar, "controller": st.one_of(
                                        st.dictionaries(st.sampled_from(["interval_s", "max_retries", "foo"]),
                                                        _scalar, max_size=2), _scalar)}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_fleet)
def test_fleet_parser_property_accepts_or_names_the_problem(data: Any) -> None:
    """Any input: a Fleet whose endpoints keep their names, prices and URLs, or one ConfigError on one line; never
    another exception."""
    try:
        fleet = Fleet.from_dict(data)
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text
        assert any(w in text for w in ("endpoint", "fleet", "controller")), text
        return
    assert isinstance(data, dict) and len(fleet.endpoints) == len(data["endpoints"])
    for spec, raw in zip(fleet.endpoints, data["endpoints"]):
        assert spec.name == raw["name"] and spec.url == raw["url"]
        assert spec.price_per_hour == raw["price_per_hour"] >= 0 and math.isfinite(spec.price_per_hour)
    assert len(set(fleet.names)) == len(fleet.names)


# ---- the dispatcher API ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", BUILDS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@pytest.mark.parametrize("call, error, message", [
    (lambda d: d.set_weights([1.0, "x", 1.0]), (TypeError, ValueError), ""),
    (lambda d: d.set_weights(None), TypeError, ""),
    (lambda d: d.set_weights([1.0, 1.0]), ValueError, "length 2, expected 3"),
    (lambda d: d.record(0, 0.1, True), DispatchError, r"record\(0\) without a pick"),
    (lambda d: d.pick([0, 1, 2]), DispatchError, "excluded"),
    (lambda d: d.set_available(3, True), IndexError, "index 3 out of range for 3"),
    (lambda d: d.resize(-1), ValueError, "must be >= 0"),
], ids=["weight-not-a-number", "weights-none", "weights-short", "record-without-pick", "exclude-all",
        "index-out-of-range", "resize-negative"])
def test_dispatcher_misuse(impl: Any, call: Any, error: Any, message: str) -> None:
    d = impl.Dispatcher(3, seed=1)
    d.set_weights([1.0, 2.0, 3.0])
    before = (d.weights(), repr(d.stats()))
    with pytest.raises(error, match=message or None):
        call(d)
    assert (d.weights(), repr(d.stats())) == before, "a refused call changed the dispatcher"


_index = st.integers(-2, 6)
_call = st.one_of(
    st.tuples(st.just("pick"), st.one_of(st.none(), _index, st.lists(_index, max_size=3))),
    st.tuples(st.just("record"), _index, st.one_of(st.floats(-1, 5), st.just(math.nan)), st.booleans()),
    st.tuples(st.just("weights"), st.lists(st.one_of(st.floats(-1, 10), st.just(math.inf)), max_size=6)),
    st.tuples(st.just("available"), _index, st.booleans()),
    st.tuples(st.just("resize"), st.integers(-1, 6)),
)


@pytest.mark.parametrize("impl", BUILDS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 5), calls=st.lists(_call, max_size=40))
def test_dispatcher_property_misuse_never_corrupts(impl: Any, n: int, calls: List[Any]) -> None:
    """Any sequence of calls, valid or not: only the documented errors, a refused call changes nothing, and the
    books balance (picks = successes + failures + in flight; nothing in flight below zero)."""
    d = impl.Dispatcher(n, seed=3)
    documented = (ValueError, IndexError, TypeError, DispatchError)
    for call in calls:
        before = repr(d.stats()), d.weights()
        try:
            if call[0] == "pick":
                d.pick(call[1])
            elif call[0] == "record":
                d.record(call[1], call[2], call[3])
            elif call[0] == "weights":
                d.set_weights(call[1])
            elif call[0] == "available":
                d.set_available(call[1], call[2])
            else:
                d.resize(call[1])
        except documented:
            assert (repr(d.stats()), d.weights()) == before, call
        s = d.stats()
        assert all(k >= 0 for k in s.in_flight)
        for i in range(d.n_endpoints):
            assert s.picks[i] == s.successes[i] + s.failures[i] + s.in_flight[i]


# ---- the exporter -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"),
    ("not-a-pipeline", "not a diffusers pipeline"),
    ("output-exists", "--force"),
])
def test_exporter_bad_input_writes_nothing(tmp_path: Path, capsys: Any, case: str, needle: str) -> None:
    source = tmp_path / "model"
    out = tmp_path / "out"
    if case == "not-a-pipeline":
        source.mkdir()
        (source / "notes.txt").write_text("not a model")
    if case == "output-exists":
        source = Path("tiny")
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = sorted((str(p.relative_to(tmp_path)), p.stat().st_size) for p in tmp_path.rglob("*"))
    code = main(["export", "stable-diffusion", "--model", str(source), "--out", str(out), "--targets", "python"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and needle in err[-1] and len([line for line in err if "error" in line.lower()]) == 1, err
    after = sorted((str(p.relative_to(tmp_path)), p.stat().st_size) for p in tmp_path.rglob("*"))
    assert after == before, "a refused export wrote or removed files"


@pytest.mark.parametrize("args, needle", [
    (["--hedge", "1.5"], "must be a share in [0, 1]"),
    (["--policies", "tritonmix-auto,fastest"], "unknown policy 'fastest'"),
])
def test_scenario_bad_options_start_nothing(tmp_path: Path, capsys: Any, args: List[str], needle: str) -> None:
    out = tmp_path / "out"
    code = main(["bench", "scenario", "--quick", "--out", str(out)] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and needle in err[-1], err
    assert not out.exists(), "a refused scenario wrote its output folder"


# ---- the server's own errors, through the clients: passed through once, never retried ----------------------------

def _malformed(module: Any) -> list:
    bad = module.InferInput("seed", [1, 2], "INT64")  # the model takes seed [1]
    bad.set_data_from_numpy(np.zeros((1, 2), dtype=np.int64))
    return inputs(module, 0)[:1] + [bad]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", ["unknown-model", "malformed-tensor"])
def test_server_errors_pass_through_once(healthy: LocalFleet, protocol: str, case: str) -> None:
    """Counted on the client (attempts, retry budget) and, for HTTP, on the way into the servers: a proxy in
    front of every endpoint counts the ``POST .../infer`` requests that reached a server. (Triton's own statistics
    and metrics count neither a request for an unknown model nor one refused for its inputs; gRPC's requests are
    HPACK-coded, so for gRPC the client's own count is the measure.)"""
    module = tritonmix.http if protocol == "http" else tritonmix.grpc
    proxies = {name: FlappingProxy(ep.http_url) for name, ep in healthy.endpoints.items()} \
        if protocol == "http" else {}
    try:
        fleet = client_fleet(healthy, protocol, urls={n: p.url for n, p in proxies.items()})
        with module.InferenceServerClient(fleet=fleet, seed=9) as client:
            client.infer(MODEL, inputs(module, 1))  # warm: readiness known, dispatcher made
            for _ in range(5):
                with pytest.raises(InferenceServerException) as info:
                    if case == "unknown-model":
                        client.infer("no_such_model", inputs(module, 2))
                    else:
                        client.infer(MODEL, _malformed(module))
                text = info.value.message()
                assert "tritonmix" not in text, f"not the server's own error: {text}"
                if case == "unknown-model":
                    assert "no_such_model" in text and "unknown model" in text.lower(), text
                    assert info.value.status() in ("404", "400", "StatusCode.NOT_FOUND"), info.value.status()
                else:
                    assert "seed" in text and "shape" in text, text
            counters = client.router.endpoint_counters()
            assert sum(f for _, _, f in counters) == 5, f"each error must be one attempt: {counters}"
            assert client.router.budget.snapshot()[1] == 0, "a server's answer about the request was retried"
            picks = sum(sum(d.stats().picks) for d in client.router.dispatchers().values())
            assert picks == 1 + 5, f"{picks} attempts for 6 requests"
        if proxies:
            reached = sum(p.infer_requests for p in proxies.values())
            assert reached == 1 + 5, f"the servers received {reached} inference requests for 6 sent"
    finally:
        for proxy in proxies.values():
            proxy.close()
