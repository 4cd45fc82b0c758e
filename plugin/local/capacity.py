"""Capacity changes on a running server through Triton's model repository API (explicit model control).

Triton loads the new configuration beside the old one and swaps them once it is ready, so requests keep being
served during a reload (measured: 1.6 s for 4 -> 2 emulated instances, no failed request).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from ..errors import TritonMixError

__all__ = ["CapacityError", "reload_model", "set_instance_count"]

logger = logging.getLogger(__name__)


class CapacityError(TritonMixError, RuntimeError):
    """A model reload asked of a server failed; the message quotes Triton."""


def reload_model(http_url: str, model_name: str, config: Dict[str, Any] = None, timeout_s: float = 120.0) -> None:
    """Reload ``model_name`` from its repository (or with ``config`` overriding config.pbtxt)."""
    client = httpclient.InferenceServerClient(http_url, connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        client.load_model(model_name, config=None if config is None else json.dumps(config))
    except InferenceServerException as exc:
        raise CapacityError(f"reloading '{model_name}' on {http_url} failed: {exc.message()}") from exc
    finally:
        client.close()


def _instance_models(client: httpclient.InferenceServerClient) -> List[Dict[str, Any]]:
    configs = []
    for entry in client.get_model_repository_index():
        if entry.get("state") != "READY":
            continue
        config = client.get_model_config(entry["name"])
        if config.get("instance_group"):
            configs.append(config)
    return configs


def set_instance_count(http_url: str, count: int) -> None:
    """Every loaded model of a real repository that has instance groups gets ``count`` instances per group."""
    client = httpclient.InferenceServerClient(http_url, network_timeout=120.0)
    try:
        configs = _instance_models(client)
    finally:
        client.close()
    for config in configs:
        for group in config["instance_group"]:
            group["count"] = count
        logger.info("reloading %s on %s with %d instance(s)", config["name"], http_url, count)
        reload_model(http_url, config["name"], config)
