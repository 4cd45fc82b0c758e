"""The gateway's Envoy configuration as values (no Envoy): EDS from plan weights and availability, route and cluster
names, the report built from Envoy's admin counters, and ``envoy --mode validate`` on a bootstrap."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import tritonmix.gateway as gateway
from tritonmix.control_plane.report import fleet_fingerprint, parse_report
from tritonmix.gateway.config import (GatewaySettings, Upstream, bootstrap, cluster_name, clusters, envoy_weights,
                                      inner_name, load_assignment, planned_count, route_config)
from tritonmix.gateway.stats import host_counts, report_body

UPS = (Upstream("a", "127.0.0.1", 8000, 8001), Upstream("b", "127.0.0.1", 8010, 8011),
       Upstream("c", "127.0.0.1", 8020, 0))


def _groups(cla: dict) -> dict:
    out = {}
    for group in cla["resources"][0]["endpoints"]:
        for lb in group["lb_endpoints"]:
            out[lb["endpoint"]["hostname"]] = (group["priority"], lb["load_balancing_weight"],
                                               lb.get("health_status", "HEALTHY"))
    return out


def test_public_names_exist() -> None:
    assert all(hasattr(gateway, name) for name in gateway.__all__)


def test_weights_become_priorities_and_integers() -> None:
    assert envoy_weights([0.98, 0.01, 0.0]) == (980, 10, 0)
    assert envoy_weights([1e-6]) == (1,)  # a weight the plan gives is never rounded away
    got = _groups(load_assignment("x", "http", UPS, [0.9, 0.0, 0.1], [True, True, True], "7"))
    assert got == {"a": (0, 900, "HEALTHY"), "b": (1, 1, "HEALTHY"), "c": (0, 100, "HEALTHY")}


def test_unavailable_endpoints_are_unhealthy_and_grpc_skips_hosts_without_a_port() -> None:
    got = _groups(load_assignment("x", "grpc", UPS, [0.5, 0.5, 0.0], [True, False, True], "3"))
    assert got == {"a": (0, 500, "HEALTHY"), "b": (1, 500, "UNHEALTHY")}  # c has no gRPC port
    # nothing weighted and available: every available endpoint at priority 0, weight 1
    got = _groups(load_assignment("x", "http", UPS, [0.0, 1.0, 0.0], [True, False, True], "4"))
    assert got == {"a": (0, 1, "HEALTHY"), "b": (1, 1, "UNHEALTHY"), "c": (0, 1, "HEALTHY")}


def test_a_capped_model_cluster_reaches_its_endpoints_through_the_inner_hops() -> None:
    """Priority 0: the capped ways in of the planned endpoints; priority 1: the uncapped ways in of all of them,
    the unavailable one UNHEALTHY; the route tries each planned endpoint once, retrying overflow and unreached."""
    cla = load_assignment("m", "http", UPS, [0.9, 0.0, 0.1], [True, True, False], "7", model="sd/x")
    got = [(g["priority"], lb["endpoint"]["address"]["envoy_internal_address"]["server_listener_name"],
            lb["endpoint"]["hostname"], lb["load_balancing_weight"], lb.get("health_status", "HEALTHY"))
           for g in cla["resources"][0]["endpoints"] for lb in g["lb_endpoints"]]
    assert got == [(0, "cap~sd_x~a", "a", 900, "HEALTHY"),
                   (1, "all~sd_x~a", "a", 900, "HEALTHY"), (1, "all~sd_x~b", "b", 1, "HEALTHY"),
                   (1, "all~sd_x~c", "c", 100, "UNHEALTHY")]
    assert planned_count([0.9, 0.0, 0.1], [True, True, False]) == 1
    assert planned_count([0.0, 0.0, 0.0], [True, True, False]) == 2
    policy = route_config(["sd/x"], GatewaySettings(retries=3), {"sd/x": 2})["resources"][0]["virtual_hosts"][0][
        "routes"][0]["route"]["retry_policy"]
    assert "retriable-headers" in policy["retry_on"] and policy["num_retries"] == 4
    assert policy["retry_priority"]["typed_config"]["update_frequency"] == 2
    assert {h["name"] for h in policy["retriable_headers"]} == {"x-envoy-overloaded", "x-tritonmix-retriable"}
    names = [c["name"] for c in clusters(["sd/x"], GatewaySettings(), lambda n: f"/x/{n}", "/x", UPS)["resources"]]
    assert names == ["http~default", "in~sd_x~a", "in~sd_x~b", "in~sd_x~c", "http~m~sd_x", "grpc~default"]
    # without limits: one hop, as before
    plain = route_config(["sd/x"], GatewaySettings(enforce_limits=False))["resources"][0]["virtual_hosts"][0]
    assert "retriable_headers" not in plain["routes"][0]["route"]["retry_policy"]
    assert inner_name("in", "sd/x", "a") == "in~sd_x~a"


def test_routes_send_each_model_to_its_cluster() -> None:
    routes = route_config(["add_sub", "sd/x"], GatewaySettings())["resources"][0]["virtual_hosts"][0]["routes"]
    assert [(r["match"], r["route"]["cluster"]) for r in routes] == [
        ({"path": "/v2/models/add_sub"}, "http~m~add_sub"), ({"prefix": "/v2/models/add_sub/"}, "http~m~add_sub"),
        ({"path": "/v2/models/sd/x"}, "http~m~sd_x"), ({"prefix": "/v2/models/sd/x/"}, "http~m~sd_x"),
        ({"prefix": "/"}, "http~default")]
    assert cluster_name("grpc", None) == "grpc~default"


def test_report_from_envoy_counters_parses_on_the_plane() -> None:
    names = [u.name for u in UPS]
    clusters = {"cluster_statuses": [
        {"name": "http~m~add_sub", "host_statuses": [
            {"hostname": "a", "stats": [{"name": "rq_total", "value": "5"}, {"name": "rq_success", "value": "4"},
                                        {"name": "rq_error", "value": "1"}, {"name": "rq_active", "value": "2"}]},
            {"hostname": "b", "stats": [{"name": "rq_total", "value": "3"}],
             "health_status": {"failed_outlier_check": True}}]},
        {"name": "grpc~default", "host_statuses": [
            {"hostname": "a", "stats": [{"name": "rq_total", "value": "2"}, {"name": "rq_success", "value": "2"}]},
            {"hostname": "unknown", "stats": [{"name": "rq_total", "value": "9"}]}]}]}
    counts = host_counts(clusters, names)
    body = report_body(counts, names, ["add_sub"], "gw/1", fleet_fingerprint(names), 0, -1.0, "add_sub")
    report = parse_report(body, names, fleet_fingerprint(names))
    assert report.ok.tolist() == [6, 0, 0] and report.failed.tolist() == [1, 0, 0]
    (key,) = report.keys
    assert (key.model, key.arrivals) == ("add_sub", 10)
    assert key.successes.tolist() == [6, 0, 0] and key.in_flight.tolist() == [2, 0, 0]
    assert report.ejected == (1,)


def test_envoy_validates_the_bootstrap(tmp_path: Path) -> None:
    envoy = pytest.importorskip("tritonmix.gateway.envoy").find_envoy()
    settings = GatewaySettings(http_port=18000, grpc_port=18001, access_log=str(tmp_path / "access.log"))
    (tmp_path / "cds.json").write_text("{}")
    (tmp_path / "rds.json").write_text("{}")
    config = tmp_path / "bootstrap.json"
    value = bootstrap(settings, str(tmp_path), str(tmp_path / "cds.json"), str(tmp_path / "rds.json"), UPS, ["m"])
    # the CDS file is not read in validate mode: its inner clusters go in as static ones
    value["static_resources"]["clusters"] = [
        {k: v for k, v in c.items() if k != "@type"}
        for c in clusters(["m"], settings, lambda n: str(tmp_path / n), str(tmp_path), UPS)["resources"]
        if c["name"].startswith("in~")]
    assert len([x for x in value["static_resources"]["listeners"] if "internal_listener" in x]) == 6
    config.write_text(json.dumps(value))
    out = subprocess.run([str(envoy), "--mode", "validate", "-c", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_a_fleet_of_one_endpoint_gets_no_caps(tmp_path: Path) -> None:
    """Caps need somewhere to spill: with one endpoint the gateway builds none (no inner hop); with two it does,
    and an explicit enforce_limits=False holds."""
    from tritonmix.fleet import Fleet

    def fleet(n: int) -> Fleet:
        return Fleet.from_dict({"mode": "auto", "endpoints": [
            {"name": f"t{k}", "url": f"127.0.0.1:{8000 + 10 * k}", "accelerator": "cpu", "price_per_hour": 1.0}
            for k in range(n)]})
    work = str(tmp_path)
    assert not gateway.Gateway(fleet(1), http_port=1, grpc_port=2, work_dir=work).settings.enforce_limits
    assert gateway.Gateway(fleet(2), http_port=1, grpc_port=2, work_dir=work).settings.enforce_limits
    assert not gateway.Gateway(fleet(2), http_port=1, grpc_port=2, work_dir=work,
                               enforce_limits=False).settings.enforce_limits


def test_an_unchanged_plan_writes_no_file_and_each_file_has_a_folder_of_its_own(tmp_path: Path) -> None:
    """Envoy reloads every source watching a folder when a file is moved into it: one folder per file, and a plan
    that moves no weight writes nothing (``held`` then maps Envoy's older stamp to the plan applied last)."""
    from tritonmix.gateway.xds import FileXds

    xds = FileXds(tmp_path, UPS, ["m"], GatewaySettings())
    xds.initial()
    files = xds.files()
    assert len({str(Path(f).parent) for f in files}) == len(files)
    xds.apply_weights({None: (0.5, 0.5, 0.0), "m": (0.5, 0.5, 0.0)}, (True, True, True), "7")
    writes = xds.writes
    xds.generation = 8
    xds.apply_weights({None: (0.5, 0.5, 0.0), "m": (0.5, 0.5, 0.0)}, (True, True, True), "8")
    assert xds.writes == writes
    assert xds.held("http~m~m", "7") == "8" and xds.held("http~m~m", "3") == "3"
    xds.apply_weights({None: (0.5, 0.5, 0.0), "m": (0.9, 0.1, 0.0)}, (True, True, True), "9")
    assert xds.writes == writes + 1  # only the model's cluster moved


def test_a_priority_route_reaches_envoy_as_the_proportional_route_it_was_made_from(tmp_path: Path) -> None:
    """``cost_picker: cheapest_first`` ranks the tiers with weights 0.01 apart and spills at its limits; Envoy's
    overflow (priority 1) goes to every available endpoint by weight, where weight 1 of a pool the plan does not
    load would match the last tier's. So the gateway writes the proportional route (same load, weights in
    proportion to it, its limits): in a scenario run with the priority weights the gateway sent 1-6 requests a
    seed to the CPU pool (5 s each) and reached 95.9% of the SLO with 6 errors, against 97.2% and none."""
    from tritonmix.controller.model import ModelPlan
    from tritonmix.controller.plan import ModelRoute, Plan
    from tritonmix.gateway.xds import FileXds

    rates = (6.0, 3.0, 0.0)
    spread = ModelPlan("cost", rates, (0.0,) * 3, (2 / 3, 1 / 3, 0.0), (0.0,) * 3)
    ranked = ModelPlan("cost", rates, (0.0,) * 3, (0.99, 0.01, 0.0), (0.0,) * 3)
    route = ModelRoute(ranked, (2, 2, 0), proportional=ModelRoute(spread, (3, 3, 0)))
    plan = Plan(5, 1.0, ("a", "b", "c"), (True, True, True), spread, (("m", route),))
    assert plan.weights("m", "interactive") == (0.99, 0.01, 0.0) and plan.limits("m") == (2, 2, 0)
    xds = FileXds(tmp_path, UPS, ["m"], GatewaySettings())
    xds.initial()
    xds.apply(plan)
    eds = json.loads(Path(xds.eds_path(cluster_name("http", "m"))).read_text())
    first = eds["resources"][0]["endpoints"][0]
    assert first["priority"] == 0
    assert [lb["load_balancing_weight"] for lb in first["lb_endpoints"]] == [667, 333]
    assert set(xds.limits(plan).values()) == {3, gateway.config.NO_LIMIT}
    # a plan without priority routes is written as it is
    plain = Plan(6, 1.0, ("a", "b", "c"), (True, True, True), spread, (("m", route.proportional),))
    assert plain.proportional() is plain
