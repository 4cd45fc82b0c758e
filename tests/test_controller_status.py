"""``tritonmix status``: the table renders the controller's view; user errors are one line, exit 2."""
from __future__ import annotations

import io

from rich.console import Console

from tritonmix.cli import main
from tritonmix.commands.status import render
from tritonmix.controller.simulation import ServerModel, Simulation
from tritonmix.fleet import Fleet


def test_render_shows_every_endpoint_mode_and_health():
    fleet = Fleet.from_dict({"slo_ms": 150, "endpoints": [
        {"name": "inf2-a", "url": "127.0.0.1:9001", "accelerator": "neuron", "price_per_hour": 0.76, "max_rps": 15},
        {"name": "g5-a", "url": "127.0.0.1:9002", "accelerator": "gpu", "price_per_hour": 1.0, "max_rps": 15}]})
    sim = Simulation.build(fleet, [ServerModel(0.067), ServerModel(0.068)], seed=1, jitter=0.0)
    sim.at(2.2, lambda: sim.kill(1))
    sim.run(3.0, {("sd", "interactive"): 5.0})
    out = io.StringIO()
    Console(file=out, width=160).print(render(sim.controller))
    text = out.getvalue()
    assert "inf2-a" in text and "g5-a" in text and "DOWN" in text and "mode" in text


def test_missing_fleet_file_is_a_cli_error(capsys):
    assert main(["status", "/nonexistent/fleet.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_render_shows_capacity_per_model_where_an_endpoint_serves_several():
    fleet = Fleet.from_dict({"slo_ms": 150, "endpoints": [
        {"name": "inf2-a", "url": "127.0.0.1:9001", "accelerator": "neuron", "price_per_hour": 0.76, "max_rps": 15,
         "max_concurrency": 4}]})
    sim = Simulation.build(fleet, [ServerModel(0.01, 4, per_model_s={"big": 0.1})], seed=1, jitter=0.0)
    sim.run(4.0, {("big", "interactive"): 5.0, ("small", "interactive"): 5.0})
    out = io.StringIO()
    Console(file=out, width=200).print(render(sim.controller))
    text = out.getvalue()
    mu = sim.controller.snapshot().capacity_rps
    assert f"big {mu[('inf2-a', 'big')]:.2f}" in text and f"small {mu[('inf2-a', 'small')]:.2f}" in text, text
