"""Server-level calls of the drop-in clients: how one answer is made from the fleet's many.

Each tritonclient method that is not ``infer`` gets one of these aggregations (``POLICIES`` maps names to them);
the generated method keeps tritonclient's signature and docstring, with the aggregation prepended:

    any_true     is_server_live, is_server_ready, is_model_ready: True while any endpoint says so; an endpoint
                 that cannot be reached counts as False; an error only when no endpoint answered at all
    model_first  get_model_metadata, get_model_config: from the first endpoint where the model is ready (then the
                 others); the server's own error when none has it
    first        get_server_metadata, get_model_repository_index, get_trace_settings, get_log_settings, the shared
                 memory status calls: the first endpoint (in fleet order) that answers
    every        load_model, unload_model, update_trace_settings, update_log_settings, (un)register shared memory:
                 sent to every endpoint; returns the first endpoint's answer; one error naming each endpoint that
                 failed when any did
    sum          get_inference_statistics: summed across endpoints, per (model name, version), in the same shape
                 (JSON dict, or the protobuf message for gRPC without as_json); last_inference is the latest
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tritonclient.utils import InferenceServerException

__all__ = ["POLICIES", "DOCS", "sum_statistics", "combine_errors", "make_method", "make_async_method",
           "install_server_calls"]

POLICIES: Dict[str, str] = {
    "is_server_live": "any_true", "is_server_ready": "any_true", "is_model_ready": "any_true",
    "get_model_metadata": "model_first", "get_model_config": "model_first",
    "get_server_metadata": "first", "get_model_repository_index": "first", "get_trace_settings": "first",
    "get_log_settings": "first", "get_system_shared_memory_status": "first",
    "get_cuda_shared_memory_status": "first",
    "load_model": "every", "unload_model": "every", "update_trace_settings": "every",
    "update_log_settings": "every", "register_system_shared_memory": "every",
    "unregister_system_shared_memory": "every", "register_cuda_shared_memory": "every",
    "unregister_cuda_shared_memory": "every",
    "get_inference_statistics": "sum",
}

DOCS = {
    "any_true": "tritonmix: True while any endpoint of the fleet says so (an unreachable one counts as False; "
                "an error only when no endpoint answered).",
    "model_first": "tritonmix: answered by the first endpoint where the model is ready, then the others.",
    "first": "tritonmix: answered by the first endpoint (in fleet order) that answers.",
    "every": "tritonmix: sent to every endpoint; returns the first endpoint's answer; raises one error naming "
             "each endpoint that failed.",
    "sum": "tritonmix: summed across endpoints per (model, version), in tritonclient's shape.",
}

Call = Callable[[int], Any]


def combine_errors(what: str, errors: Sequence[Tuple[str, BaseException]]) -> InferenceServerException:
    """One InferenceServerException naming each endpoint and its error; the first server error's status."""
    status = next((e.status() for _, e in errors if isinstance(e, InferenceServerException) and e.status()), None)
    detail = "; ".join(f"{name}: {_text(e)}" for name, e in errors)
    return InferenceServerException(msg=f"tritonmix: {what} failed on {detail}", status=status)


def _text(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        return str(exc.message())
    return f"{type(exc).__name__}: {exc}"


def aggregate(policy: str, order: Sequence[int], names: Sequence[str], results: List[Tuple[int, Any, Any]],
              what: str, convert: Callable[[List[Any]], Any]) -> Any:
    """The answer from ``results`` ((endpoint, value, error) in call order) under ``policy``."""
    ok = [(i, v) for i, v, err in results if err is None]
    errors = [(names[i], err) for i, _, err in results if err is not None]
    if policy == "any_true":
        if not ok:
            raise combine_errors(what, errors)
        return any(v for _, v in ok)
    if policy == "every":
        if errors:
            raise combine_errors(what, errors)
        return ok[0][1] if ok else None
    if policy == "sum":
        if not ok:
            raise combine_errors(what, errors)
        return convert([v for _, v in ok])
    if ok:  # first, model_first
        return ok[0][1]
    server_errors = [e for _, e in errors if isinstance(e, InferenceServerException)]
    if len(server_errors) == len(errors) and server_errors:
        raise server_errors[0]
    raise combine_errors(what, errors)


def endpoint_order(router: Any, policy: str, args: tuple, kwargs: dict) -> List[int]:
    """Endpoints in the order a server-level call asks them: for ``model_first``, those where the model is ready
    come first (a stable sort keeps fleet order within each group). Slots whose endpoint left are not asked."""
    vacant = router.vacant() if hasattr(router, "vacant") else ()
    order = [i for i in range(len(router.endpoint_names())) if not (i < len(vacant) and vacant[i])]
    if policy == "model_first":
        mask = router.ready_mask(args[0] if args else kwargs.get("model_name", ""))
        order.sort(key=lambda i: not mask[i])
    return order


def call_in_order(order: Sequence[int], call: Callable[[int], Any], policy: str) -> List[Tuple[int, Any, Any]]:
    """(index, value, error) per endpoint asked, in ``order``, stopping early where the policy allows."""
    results: List[Tuple[int, Any, Any]] = []
    for i in order:
        try:
            value = call(i)
        except Exception as exc:  # noqa: BLE001 - aggregated by the caller
            results.append((i, None, exc))
            continue
        results.append((i, value, None))
        if stops_early(policy, value):
            break
    return results


def stops_early(policy: str, value: Any) -> bool:
    """Whether the fan-out can stop after this successful answer."""
    return policy in ("first", "model_first") or (policy == "any_true" and bool(value))


def make_method(name: str, original: Callable, fan_out: Callable[..., Any]) -> Callable:
    """A method with ``original``'s signature that calls ``fan_out(self, name, policy, args, kwargs)``."""
    policy = POLICIES[name]

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return fan_out(self, name, policy, args, kwargs)

    method.__doc__ = DOCS[policy] + "\n\n" + (original.__doc__ or "")
    return method


def make_async_method(name: str, original: Callable, fan_out: Callable[..., Any]) -> Callable:
    policy = POLICIES[name]

    @functools.wraps(original)
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await fan_out(self, name, policy, args, kwargs)

    method.__doc__ = DOCS[policy] + "\n\n" + (original.__doc__ or "")
    return method


def install_server_calls(cls: type, original_cls: type, documented: Sequence[str] = ()) -> None:
    """Give ``cls`` (a drop-in client with a ``_fan_out`` method, sync or coroutine) one method per name in
    POLICIES that ``original_cls`` (tritonclient's client) has, with its signature; and the docstrings of
    tritonclient's own for the methods named in ``documented``."""
    asynchronous = inspect.iscoroutinefunction(cls._fan_out)  # type: ignore[attr-defined]
    make = make_async_method if asynchronous else make_method
    same_kind = inspect.iscoroutinefunction if asynchronous else inspect.isfunction
    for name in POLICIES:
        original = getattr(original_cls, name, None)
        if original is not None and same_kind(original):
            setattr(cls, name, make(name, original, cls._fan_out))  # type: ignore[attr-defined]
    for name in documented:
        getattr(cls, name).__doc__ = getattr(original_cls, name).__doc__


# ---- statistics ----------------------------------------------------------------------------------------------

def sum_statistics(answers: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Sum tritonclient's statistics dicts ({"model_stats": [...]}) per (name, version)."""
    merged: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for answer in answers:
        for stat in answer.get("model_stats", []):
            key = (stat.get("name", ""), str(stat.get("version", "")))
            merged[key] = _merge(merged[key], stat) if key in merged else stat
    out = dict(answers[0]) if answers else {}
    out["model_stats"] = list(merged.values())
    return out


def _merge(a: Any, b: Any, field: Optional[str] = None) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a[k], b[k], k) if k in a and k in b else (a[k] if k in a else b[k])
                for k in {**a, **b}}
    if isinstance(a, list) and isinstance(b, list):
        return _merge_list(a, b)
    if field in ("name", "version"):
        return a
    return _add(a, b, field)


def _merge_list(a: List[Any], b: List[Any]) -> List[Any]:
    """Lists of dicts keyed by batch_size (batch_stats) or by name (memory usage); other lists: a's."""
    if not all(isinstance(x, dict) for x in a + b):
        return a
    key = "batch_size" if any("batch_size" in x for x in a + b) else "name" if any("name" in x for x in a + b) else None
    if key is None:
        return a
    merged: Dict[Any, Any] = {}
    for item in a + b:
        k = str(item.get(key))
        merged[k] = _merge(merged[k], item) if k in merged else item
    return list(merged.values())


def _add(a: Any, b: Any, field: Optional[str]) -> Any:
    as_str = isinstance(a, str) or isinstance(b, str)  # protobuf JSON writes int64 as a string
    try:
        x, y = int(a), int(b)
    except (TypeError, ValueError):
        return a
    value = max(x, y) if field == "last_inference" else x + y
    return str(value) if as_str else value
