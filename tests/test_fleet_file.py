"""The fleet file: the example parses, and every bad file gets one clear error naming the endpoint and the field."""
from __future__ import annotations

from pathlib import Path

import pytest

from tritonmix import ConfigError, Fleet

REPO_ROOT = Path(__file__).resolve().parent.parent

LOCAL = "{name: a, accelerator: gpu, price_per_hour: 1.0, profile: inf2.xlarge}"
REMOTE = "{name: b, accelerator: gpu, price_per_hour: 1.0, url: '127.0.0.1:8000'}"

BAD_FILES = [
    ("unknown endpoint key", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, profile: inf2.xlarge, "
                             "colour: red}]", r"endpoint 'a': unknown field\(s\) colour"),
    ("unknown fleet key", f"endpoints: [{LOCAL}]\nslo: 3", r"fleet: unknown field\(s\) slo"),
    ("duplicate names", f"endpoints: [{LOCAL}, {LOCAL}]", r"endpoint 'a': duplicate name \(endpoints 0 and 1\)"),
    ("negative price", "endpoints: [{name: a, accelerator: gpu, price_per_hour: -1, profile: inf2.xlarge}]",
     r"endpoint 'a': field 'price_per_hour': -1.0 must be >= 0"),
    ("price not a number", "endpoints: [{name: a, accelerator: gpu, price_per_hour: cheap, profile: inf2.xlarge}]",
     r"endpoint 'a': field 'price_per_hour': 'cheap' is not a finite number"),
    ("url with scheme", "endpoints: [{name: b, accelerator: gpu, price_per_hour: 1, url: 'http://h:8000'}]",
     r"endpoint 'b': field 'url': 'http://h:8000' is not host:port"),
    ("url without port", "endpoints: [{name: b, accelerator: gpu, price_per_hour: 1, url: 'h'}]",
     r"endpoint 'b': field 'url': 'h' is not host:port with a port"),
    ("url port out of range", "endpoints: [{name: b, accelerator: gpu, price_per_hour: 1, url: 'h:70000'}]",
     r"endpoint 'b': field 'url': 'h:70000' is not host:port with a port in 1..65535"),
    ("unknown profile", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, profile: tpu-v9}]",
     r"endpoint 'a': field 'profile': unknown profile 'tpu-v9'"),
    ("profile negative latency", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, "
                                 "profile: {latency_s: -0.5}}]",
     r"endpoint 'a': field 'profile'.latency_s: -0.5 must be > 0"),
    ("profile zero concurrency", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, "
                                 "profile: {base: inf2.xlarge, concurrency: 0}}]",
     r"endpoint 'a': field 'profile'.concurrency: 0 must be an integer >= 1"),
    ("profile cancellable not a bool", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, "
                                       "profile: {base: inf2.xlarge, cancellable: 'no'}}]",
     r"endpoint 'a': field 'profile'.cancellable: 'no' must be true or false"),
    ("profile unknown field", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1, "
                              "profile: {latency_s: 1, speed: 2}}]",
     r"endpoint 'a': field 'profile': unknown field\(s\) speed"),
    ("profile on a remote endpoint", "endpoints: [{name: b, accelerator: gpu, price_per_hour: 1, url: 'h:1', "
                                     "profile: inf2.xlarge}]",
     r"endpoint 'b': field 'profile' is for local endpoints only"),
    ("missing accelerator", "endpoints: [{name: a, price_per_hour: 1, profile: inf2.xlarge}]",
     r"endpoint 'a': field 'accelerator' is required"),
    ("missing price", "endpoints: [{name: a, accelerator: gpu, profile: inf2.xlarge}]",
     r"endpoint 'a': field 'price_per_hour' is required"),
    ("missing name", "endpoints: [{accelerator: gpu, price_per_hour: 1, profile: inf2.xlarge}]",
     r"endpoint 0: field 'name': None must be"),
    ("local without profile or repository", "endpoints: [{name: a, accelerator: gpu, price_per_hour: 1}]",
     r"endpoint 'a': a local endpoint \(no 'url'\) needs a 'profile' or a 'model_repository'"),
    ("missing endpoints", "slo_ms: 100", r"fleet: 'endpoints' must be a non-empty list"),
    ("bad mode", f"mode: cheapest\nendpoints: [{LOCAL}]", r"fleet: field 'mode': 'cheapest' is not one of"),
    ("bad protocol", "endpoints: [{name: b, accelerator: gpu, price_per_hour: 1, url: 'h:1', protocol: ftp}]",
     r"endpoint 'b': field 'protocol': 'ftp' is not one of http, grpc"),
    ("zero time_scale", f"time_scale: 0\nendpoints: [{LOCAL}]", r"fleet: field 'time_scale': 0 must be > 0"),
    ("bad emulated_model", f"emulated_model: 'sd/xl'\nendpoints: [{LOCAL}]", r"fleet: field 'emulated_model'"),
    ("bad controller field", f"controller: {{interval: 1}}\nendpoints: [{LOCAL}]",
     r"controller: unknown field\(s\) interval"),
    ("bad YAML", "endpoints: [{name: a, accelerator: gpu", r"is not valid YAML"),
    ("not a mapping", "- just\n- a list", r"a fleet is a mapping with an 'endpoints' list, got list"),
]


@pytest.mark.parametrize("text, message", [pytest.param(t, m, id=i) for i, t, m in BAD_FILES])
def test_bad_fleet_file_has_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        Fleet.from_file(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Fleet.from_file(tmp_path / "nope.yaml")


def test_example_fleet_parses() -> None:
    fleet = Fleet.from_file(REPO_ROOT / "examples" / "fleet.yaml")
    assert fleet.time_scale == 0.1 and fleet.emulated_model == "stable_diffusion"
    assert fleet.names == ("inf2-a", "trn1-a", "g5-triton-a", "g6-a", "g5-cuda-a", "cpu-a")
    assert all(e.is_local and e.profile for e in fleet)
    assert fleet["g5-triton-a"].capacity_type == "spot"


def test_emulated_model_defaults_to_stable_diffusion() -> None:
    fleet = Fleet.from_dict({"endpoints": [{"name": "a", "accelerator": "gpu", "price_per_hour": 1,
                                            "profile": "inf2.xlarge"}]})
    assert fleet.emulated_model == "stable_diffusion"


def test_remote_and_local_mix() -> None:
    import yaml

    fleet = Fleet.from_dict(yaml.safe_load(f"emulated_model: sd\nendpoints: [{LOCAL}, {REMOTE}]"))
    assert fleet.emulated_model == "sd"
    assert [e.is_local for e in fleet] == [True, False]
    assert fleet.with_urls({"a": "127.0.0.1:1"})["a"].url == "127.0.0.1:1"


def test_a_fleet_writes_itself_back_to_a_file_it_reads_the_same(tmp_path: Path) -> None:
    import dataclasses

    source = Fleet.from_file(Path(__file__).resolve().parent.parent / "examples" / "fleet.yaml")
    tuned = dataclasses.replace(source, controller=dataclasses.replace(
        source.controller, interval_s=0.25, scorers=("cost",),
        hedge=dataclasses.replace(source.controller.hedge, enabled=True, delay_factor=3.0)))
    out = tmp_path / "fleet.yaml"
    tuned.to_yaml(out)
    again = Fleet.from_file(out)
    assert dataclasses.replace(again, source=None) == dataclasses.replace(tuned, source=None)
    # a started local fleet is written as the remote one a client reads: URLs, no profiles
    started = tuned.with_urls({e.name: f"127.0.0.1:{9000 + i}" for i, e in enumerate(tuned.endpoints)})
    client_view = Fleet.from_dict(started.to_dict())
    assert [e.url for e in client_view] == [e.url for e in started] and all(e.profile is None for e in client_view)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place
