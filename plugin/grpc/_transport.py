"""gRPC transport of the drop-in clients (sync and aio): failure classification, channel options, statistics sums.

tritonclient's gRPC clients are thread-safe, so there is one per endpoint, shared by every thread.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from google.protobuf.json_format import MessageToDict, ParseDict
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from ..request.fanout import sum_statistics
from ..request.retry import Outcome, backend_failed

__all__ = ["classify_grpc", "UNAVAILABLE_STATUS", "channel_kwargs", "sum_grpc_statistics", "endpoint_kwargs",
           "KEEPALIVE"]

UNAVAILABLE_STATUS = "StatusCode.UNAVAILABLE"
_DEADLINE = "StatusCode.DEADLINE_EXCEEDED"
_INTERNAL = "StatusCode.INTERNAL"
_NOT_SENT_HINTS = ("failed to connect", "connection refused", "name resolution", "dns resolution")

#: reconnect quickly once an endpoint is back (gRPC's default backoff grows to 120 s); used only when the caller
#: gave no channel_args of their own
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000)]


def classify_grpc(exc: BaseException) -> Outcome:
    """UNAVAILABLE fails over (not sent when the channel could not connect); DEADLINE_EXCEEDED may have run, and so
    may a request that Triton's python backend failed (INTERNAL, ``backend_failed``); any other status is the
    request's own error."""
    if not isinstance(exc, InferenceServerException):
        return Outcome.REQUEST
    status = exc.status()
    if status == UNAVAILABLE_STATUS:
        text = f"{exc.message()} {exc.debug_details() or ''}".lower()
        return Outcome.NOT_SENT if any(h in text for h in _NOT_SENT_HINTS) else Outcome.UNAVAILABLE
    if status == _DEADLINE:
        return Outcome.MAYBE_RAN
    if status == _INTERNAL and backend_failed(exc.message() or ""):
        return Outcome.MAYBE_RAN  # Triton's python backend failing, not the request (``backend_failed``)
    return Outcome.REQUEST


#: HTTP/2 keepalive when the caller gives no keepalive_options (tritonclient's default sends no pings): while a call
#: is in flight and nothing has been read for 10 s the channel pings, and a ping unanswered for 5 s closes the
#: connection, failing its calls (UNAVAILABLE: failed over). A connection whose peer vanished costs a call at most
#: 15 s. At most 2 pings without data in between, and none on an idle channel, so that Triton's default ping policy
#: (5 min between pings without data, 2 strikes) never answers GOAWAY "too many pings". A frozen server's kernel
#: still ACKs TCP but its gRPC stack answers no ping: after 15 s its connection is closed too.
KEEPALIVE = KeepAliveOptions(keepalive_time_ms=10_000, keepalive_timeout_ms=5_000,
                             keepalive_permit_without_calls=False, http2_max_pings_without_data=2)


def channel_kwargs(keepalive_options: Optional[KeepAliveOptions], channel_args: Optional[List[Any]]) -> Dict[str, Any]:
    """tritonclient's default channel options with KEEPALIVE (unless keepalive_options are given) plus
    RECONNECT_OPTIONS, unless the caller gave channel_args."""
    if channel_args is not None:
        return {"channel_args": channel_args}
    ka = keepalive_options or KEEPALIVE
    options = [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", ka.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
    ]
    return {"channel_args": options + RECONNECT_OPTIONS}


def endpoint_kwargs(verbose: bool, ssl: bool, root_certificates: Any, private_key: Any, certificate_chain: Any,
                    creds: Any, keepalive_options: Any, channel_args: Any) -> Dict[str, Any]:
    kwargs = dict(verbose=verbose, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                  certificate_chain=certificate_chain, creds=creds)
    kwargs.update(channel_kwargs(keepalive_options, channel_args))
    return kwargs


def sum_grpc_statistics(answers: Sequence[Any]) -> Any:
    """Sum statistics answers: JSON dicts (as_json=True) or ModelStatisticsResponse messages (same type back)."""
    if answers and isinstance(answers[0], dict):
        return sum_statistics(list(answers))
    dicts = [MessageToDict(a, preserving_proto_field_name=True) for a in answers]
    return ParseDict(sum_statistics(dicts), type(answers[0])())
