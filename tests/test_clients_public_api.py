"""The drop-in modules keep tritonclient's public surface: names, method names and signatures."""
from __future__ import annotations

import importlib
import inspect

import pytest

PAIRS = [("tritonmix.http", "tritonclient.http"), ("tritonmix.grpc", "tritonclient.grpc"),
         ("tritonmix.http.aio", "tritonclient.http.aio"), ("tritonmix.grpc.aio", "tritonclient.grpc.aio")]
OURS_ONLY = {"request_class", "deadline_s"}
SKIP = {"InferenceServerClientPlugin", "Request"}  # tritonclient internals re-exported by its __init__


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_all_names_exist_and_match(ours: str, theirs: str) -> None:
    mine = importlib.import_module(ours)
    plain = importlib.import_module(theirs)
    for name in mine.__all__:
        assert hasattr(mine, name), f"{ours}.__all__ lists missing {name}"
    wanted = set(getattr(plain, "__all__", ["InferenceServerClient"])) - SKIP
    assert wanted <= set(mine.__all__), wanted - set(mine.__all__)
    for name in ("InferInput", "InferRequestedOutput", "InferResult", "InferenceServerException"):
        if hasattr(plain, name):
            assert getattr(mine, name) is getattr(plain, name)


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_client_methods_keep_their_signatures(ours: str, theirs: str) -> None:
    mine = importlib.import_module(ours).InferenceServerClient
    plain = importlib.import_module(theirs).InferenceServerClient
    for name, member in inspect.getmembers(plain, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert hasattr(mine, name), f"{ours}.InferenceServerClient lacks {name}"
        theirs_params = list(inspect.signature(member).parameters)
        my_params = [p for p in inspect.signature(getattr(mine, name)).parameters if p not in OURS_ONLY]
        if name == "__init__":
            continue
        assert my_params == theirs_params, f"{name}: {my_params} != {theirs_params}"
        assert inspect.iscoroutinefunction(getattr(mine, name)) == inspect.iscoroutinefunction(member), name


def test_constructor_takes_tritonclients_arguments_in_order() -> None:
    for ours, theirs in PAIRS:
        mine = list(inspect.signature(importlib.import_module(ours).InferenceServerClient).parameters)
        plain = list(inspect.signature(importlib.import_module(theirs).InferenceServerClient).parameters)
        assert mine[: len(plain)] == plain, ours


def test_shared_modules_all() -> None:
    import pkgutil

    import tritonmix.clients
    import tritonmix.request

    for package in (tritonmix.request, tritonmix.clients):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name in module.__all__:
                assert hasattr(module, name), f"{module.__name__}.{name}"
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"
    assert set(tritonmix.request.__all__) >= {"Router", "Engine", "RetryPolicy", "RetryBudget", "Sequences"}
