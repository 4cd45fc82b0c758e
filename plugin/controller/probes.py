"""Readiness probes of one endpoint, with the client's TLS settings and probe headers, off the request path.

    HTTP endpoint   GET {http|https}://<url>/v2/health/ready (the client's ssl / ssl_options / ssl_context_factory /
                    insecure, or the aio client's ssl_context), the probe headers on it
    gRPC endpoint   ServerReady through tritonclient.grpc (its own small channel: the client's ssl, root
                    certificates, key, chain or creds; a short reconnect backoff), the probe headers as metadata;
                    a probe that found it unreachable drops its channel, so the next one connects afresh (as an
                    HTTP probe does) instead of failing fast in the channel's reconnect backoff

The answer is a tri-state (``Optional[bool]``):

    True    the server says it is ready
    False   it is not there (connection refused, reset, UNAVAILABLE) or says "not ready" (503, ready=false)
    None    unknown: the endpoint answered but would not say (401 / 403, UNAUTHENTICATED / PERMISSION_DENIED: up,
            behind an authenticating proxy), or the probe timed out (a loaded server is slow, not gone)

Header values are credentials: they go on the wire and nowhere else (never into a log, an error or a decision).
``ProbeBackoff`` says when the loop probes an endpoint that is down or ejected (a growing, jittered wait).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import socket
import ssl as ssl_module
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["ProbeSettings", "http_ready", "GrpcProber", "http_get", "ProbeBackoff"]

_log = logging.getLogger(__name__)

#: HTTP statuses that mean "up, but not telling us": the readiness is unknown, never "not ready"
AUTH_STATUSES = (401, 403)
#: gRPC statuses with the same meaning
AUTH_CODES = ("StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED")
UNAVAILABLE = "StatusCode.UNAVAILABLE"
#: the probe channel reconnects fast: a restarted endpoint is seen within a probe period, not a channel backoff
PROBE_CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                      ("grpc.max_reconnect_backoff_ms", 250)]


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How the controller reaches the endpoints: the client's TLS settings and the probe headers.

    ``https``: HTTP probes over TLS with ``ssl_context`` (built from the client's settings; None: the system's
    defaults). ``grpc``: keyword arguments for tritonclient.grpc.InferenceServerClient (ssl, root_certificates,
    private_key, certificate_chain, creds). ``headers``: sent with every probe and scrape (never logged)."""

    https: bool = False
    ssl_context: Optional[ssl_module.SSLContext] = dataclasses.field(default=None, repr=False)
    grpc: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def for_http(cls, ssl: bool = False, ssl_options: Optional[Mapping[str, Any]] = None,
                 ssl_context_factory: Optional[Callable[..., Any]] = None, insecure: bool = False,
                 headers: Optional[Mapping[str, str]] = None) -> "ProbeSettings":
        """The sync HTTP client's settings, read as geventhttpclient reads them: ``ssl_options['ca_certs']`` (else
        the system's CAs), ``certfile``/``keyfile``, ``ciphers``; ``insecure`` skips the host name check."""
        if not ssl:
            return cls(headers=dict(headers or {}))
        options = dict(ssl_options or {})
        factory = ssl_context_factory or ssl_module.create_default_context
        ca = options.get("ca_certs")
        try:
            context = factory(cafile=ca)
        except TypeError:
            context = factory()
            if ca:
                context.load_verify_locations(cafile=ca)
        context.check_hostname = not insecure
        if not insecure:
            context.verify_mode = ssl_module.CERT_REQUIRED
        if "certfile" in options and "keyfile" in options:
            context.load_cert_chain(certfile=options["certfile"], keyfile=options["keyfile"])
        if "ciphers" in options:
            context.set_ciphers(options["ciphers"])
        return cls(https=True, ssl_context=context, headers=dict(headers or {}))

    @classmethod
    def for_http_aio(cls, ssl: bool = False, ssl_context: Optional[ssl_module.SSLContext] = None,
                     headers: Optional[Mapping[str, str]] = None) -> "ProbeSettings":
        """The aio HTTP client's settings: its ``ssl_context`` (else the system's defaults)."""
        if not ssl:
            return cls(headers=dict(headers or {}))
        context = ssl_context if ssl_context is not None else ssl_module.create_default_context()
        return cls(https=True, ssl_context=context, headers=dict(headers or {}))

    @classmethod
    def for_grpc(cls, ssl: bool = False, root_certificates: Any = None, private_key: Any = None,
                 certificate_chain: Any = None, creds: Any = None,
                 headers: Optional[Mapping[str, str]] = None) -> "ProbeSettings":
        """The gRPC clients' settings, passed on to the probe's own tritonclient.grpc client as they are."""
        grpc = {"ssl": ssl, "root_certificates": root_certificates, "private_key": private_key,
                "certificate_chain": certificate_chain, "creds": creds}
        return cls(grpc={k: v for k, v in grpc.items() if v}, headers=dict(headers or {}))

    def http_url(self, url: str, path: str) -> str:
        return f"{'https' if self.https else 'http'}://{url}{path}"


def http_get(url: str, timeout_s: float, settings: Optional[ProbeSettings] = None) -> Tuple[Optional[int], Optional[str]]:
    """(status, body) of a GET; status None when nothing answered (refused, reset, TLS failure), -1 on a timeout.
    The body only of a 200 answer."""
    headers = dict(settings.headers) if settings is not None else {}
    context = settings.ssl_context if settings is not None and url.startswith("https://") else None
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            if response.status == 200:
                return 200, response.read().decode("utf-8", "replace")
            return response.status, None
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, None
    except urllib.error.URLError as exc:
        return (-1 if isinstance(exc.reason, (socket.timeout, TimeoutError)) else None), None
    except (socket.timeout, TimeoutError):
        return -1, None
    except (OSError, ValueError):
        return None, None


def http_ready(url: str, timeout_s: float, settings: Optional[ProbeSettings] = None) -> Optional[bool]:
    """Readiness of an HTTP endpoint (``url``: host:port): True on 200, None on 401/403 or a timeout, else False."""
    status, _ = http_get((settings or ProbeSettings()).http_url(url, "/v2/health/ready"), timeout_s, settings)
    return ready_from_status(status)


def ready_from_status(status: Optional[int]) -> Optional[bool]:
    if status == 200:
        return True
    if status in AUTH_STATUSES or status == -1:
        return None
    return False


class GrpcProber:
    """ServerReady over gRPC for one endpoint, through one tritonclient.grpc client made on first use (on a scraper
    thread) and kept while the endpoint answers; ``close()`` closes it. An UNAVAILABLE answer drops the client: a
    channel that failed to connect sits in its reconnect backoff (up to PROBE_CHANNEL_ARGS' 250 ms) and fails every
    call in it at once, so a probe landing there after a restart would say "down" of a server that is up and the
    comeback would wait one more probe period (up to a controller interval); a fresh channel connects at once."""

    def __init__(self, url: str, settings: Optional[ProbeSettings] = None) -> None:
        self._url = url
        self._settings = settings or ProbeSettings()
        self._client: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None and not self._closed:
                import tritonclient.grpc as tc

                self._client = tc.InferenceServerClient(self._url, channel_args=PROBE_CHANNEL_ARGS,
                                                        **dict(self._settings.grpc))
            return self._client

    def ready(self, timeout_s: float) -> Optional[bool]:
        from tritonclient.utils import InferenceServerException

        client = None
        try:
            client = self._get_client()
            if client is None:
                return None
            metadata: Dict[str, str] = dict(self._settings.headers)
            return bool(client.is_server_ready(headers=metadata or None, client_timeout=timeout_s))
        except InferenceServerException as exc:
            status = str(exc.status())
            if status in AUTH_CODES or status == "StatusCode.DEADLINE_EXCEEDED":
                return None
            if status == UNAVAILABLE:
                self._drop(client)
            return False
        except Exception:  # noqa: BLE001 - a probe that cannot run says nothing
            _log.debug("gRPC readiness probe of %s could not run", self._url, exc_info=False)
            return None

    def _drop(self, client: Any) -> None:
        """Forget ``client`` when it is still the kept one: the next probe makes a fresh channel. Not closed here: a
        probe on another thread may be using it; tritonclient's client closes its channel when the last probe that
        holds it returns (``__del__``)."""
        with self._lock:
            if self._client is client:
                self._client = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a probe channel must not fail the controller's stop
                pass


class ProbeBackoff:
    """When the loop probes each endpoint that is down or ejected ("watched"): at once when it becomes watched, then
    after a delay that starts at ``first_s`` and doubles up to ``max_s``, each wait jittered:

        next_i = now + d_i x U[1 - jitter, 1 + jitter],   then d_i <- min(2 d_i, max_s)
    An endpoint no longer watched starts again at ``first_s``. A restarted endpoint is seen within max_s x
    (1 + jitter) of being ready (and by the tick's own scrape, which probes readiness too); a long outage costs
    a probe per max_s, not one per first_s, and many clients' probes do not arrive in step. O(n) per call."""

    def __init__(self, n: int, first_s: float, max_s: float, jitter: float = 0.0,
                 rng: Optional[random.Random] = None) -> None:
        self.first_s, self.max_s, self.jitter = first_s, max(first_s, max_s), jitter
        self._rng = rng if rng is not None else random.Random()
        self._delay = [first_s] * n
        self._next: List[Optional[float]] = [None] * n

    def follow(self, n: int, reset: Sequence[int]) -> None:
        """Slots up to ``n``; ``reset`` ones are not watched."""
        self._delay += [self.first_s] * (n - len(self._delay))
        self._next += [None] * (n - len(self._next))
        for i in reset:
            self._delay[i], self._next[i] = self.first_s, None

    def due(self, now: float, watched: Sequence[int]) -> List[int]:
        """The watched endpoints to probe now (their next probe is scheduled); the others are forgotten."""
        keep = set(watched)
        for i in range(len(self._next)):
            if i not in keep:
                self._next[i], self._delay[i] = None, self.first_s
        out = []
        for i in watched:
            at = self._next[i]
            if at is None or now >= at:
                out.append(i)
                self._next[i] = now + self._delay[i] * (1.0 + self.jitter * (2.0 * self._rng.random() - 1.0))
                self._delay[i] = min(2.0 * self._delay[i], self.max_s)
        return out

    @property
    def next_at(self) -> float:
        """The earliest next probe (inf when nothing is watched)."""
        return min((t for t in self._next if t is not None), default=math.inf)
