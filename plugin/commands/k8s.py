"""``tritonmix k8s ...``: tritonmix on Kubernetes. ``tritonmix k8s render --fleet FLEET --out DIR`` writes the
manifests of a fleet (``tritonmix.k8s.render``); further ``k8s`` subcommands register in ``_SUBCOMMANDS``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..cli import CLIError
from ..errors import ConfigError

__all__ = ["register"]

#: flags that take one value for every pool or POOL=VALUE per pool (repeatable)
_PER_POOL = {"max_replicas": int, "min_replicas": int, "model_repository": str, "node_pool": str,
             "accelerator_resource": str}
_SCALARS = ("namespace", "triton_image", "plane_image", "prometheus_url", "prometheus_namespace", "fleet_name",
            "metric_selector", "plane_token_secret", "plane_port", "drain_s", "exit_timeout_s", "polling_interval_s",
            "triton_service_account")


def _add_render(group: Any) -> None:
    parser = group.add_parser(
        "render", help="write a fleet's Kubernetes manifests (Triton pools, KEDA, the control plane)",
        description="Write, per pool of the fleet, a Triton Deployment, a Service (labelled and annotated for "
        "discovery) and a KEDA ScaledObject on the control plane's desired replicas; then the control plane "
        "(StatefulSet, headless Service, RBAC, PodDisruptionBudget, NetworkPolicies) and a kustomization.yaml. "
        "Apply with: kubectl apply -k DIR. Values a cluster decides are required: a missing one is named. Per-pool "
        "flags take VALUE (every pool) or POOL=VALUE, repeatable. See docs/kubernetes.md.")
    parser.add_argument("--fleet", required=True, help="fleet file (YAML): its endpoints, grouped by pool, are the pools")
    parser.add_argument("--out", required=True, help="directory to write (whole or not at all)")
    parser.add_argument("--values", default=None, help="YAML file of values (the flags' names with _); flags win")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--plane-fleet", default=None,
                        help="the fleet file the in-cluster plane reads (default: --fleet), e.g. one with discovery")
    req = parser.add_argument_group("required (here or in --values)")
    req.add_argument("--namespace", help="namespace of every object")
    req.add_argument("--triton-image", help="Triton server image, e.g. nvcr.io/nvidia/tritonserver:<tag>-py3")
    req.add_argument("--model-repository", action="append", metavar="[POOL=]URI",
                     help="s3://, gs://, as://, /path/in/image or pvc://CLAIM[/SUB]; {pool} and {accelerator} "
                     "are replaced")
    req.add_argument("--plane-image", help="an image with tritonmix installed (the control plane)")
    req.add_argument("--prometheus-url", help="the Prometheus KEDA queries, e.g. http://prometheus.monitoring:9090")
    req.add_argument("--prometheus-namespace", help="namespace of the Prometheus that scrapes the plane")
    req.add_argument("--max-replicas", action="append", metavar="[POOL=]N", help="most replicas KEDA may give a pool")
    opt = parser.add_argument_group("optional")
    opt.add_argument("--fleet-name", help="the tritonmix.io/fleet label (default: the fleet file's name)")
    opt.add_argument("--min-replicas", action="append", metavar="[POOL=]N", help="fewest replicas (default 1)")
    opt.add_argument("--node-pool", action="append", metavar="[POOL=]NODEPOOL",
                     help="Karpenter NodePool (karpenter.sh/nodepool); default: the pool's instance_type")
    opt.add_argument("--accelerator-resource", action="append", metavar="[POOL=]RESOURCE[:COUNT]|none",
                     help="device resource per pod (default from the accelerator: gpu nvidia.com/gpu, neuron "
                     "aws.amazon.com/neuron, cpu none)")
    opt.add_argument("--metric-selector", help="extra PromQL label matchers for the KEDA query, e.g. namespace=\"ml\"")
    opt.add_argument("--plane-token-secret", help="Secret (key 'token') with the plane's bearer token "
                     "(default tritonmix-control-plane-token; you create it)")
    opt.add_argument("--plane-port", type=int, help="the plane's port (default 8470)")
    opt.add_argument("--drain-s", type=int, help="preStop drain before SIGTERM (default 15)")
    opt.add_argument("--exit-timeout-s", type=int, help="Triton's --exit-timeout-secs (default 30)")
    opt.add_argument("--polling-interval-s", type=int, help="KEDA pollingInterval (default 15)")
    opt.add_argument("--triton-service-account", help="ServiceAccount of the Triton pods (repository credentials)")
    parser.set_defaults(func=run_render)


#: name -> function adding one ``tritonmix k8s <name>`` subcommand to the group
_SUBCOMMANDS: Dict[str, Callable[[Any], None]] = {"render": _add_render}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("k8s", help="tritonmix on Kubernetes (render manifests, ...)",
                                   description="tritonmix on Kubernetes. See docs/kubernetes.md.")
    group = parser.add_subparsers(dest="k8s_command", metavar="K8S_COMMAND")
    group.required = True
    for add in _SUBCOMMANDS.values():
        add(group)


def _per_pool(items: Optional[List[str]], pools: List[str], kind: Any, flag: str) -> Optional[Any]:
    """["8", "cpu=2"] -> {"*": 8, "cpu": 2}; a POOL= prefix counts only when POOL is one of the fleet's pools."""
    if not items:
        return None
    out: Dict[str, Any] = {}
    for item in items:
        pool, sep, rest = item.partition("=")
        key, text = (pool, rest) if sep and pool in pools else ("*", item)
        try:
            out[key] = kind(text)
        except ValueError:
            raise CLIError(f"{flag} {item!r}: {text!r} is not a {kind.__name__}") from None
    return out


def _values(args: argparse.Namespace, pools: List[str]) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    if args.values:
        import yaml

        try:
            loaded = yaml.safe_load(Path(args.values).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CLIError(f"--values {args.values}: {exc}".replace("\n", " ")) from None
        if not isinstance(loaded, dict):
            raise CLIError(f"--values {args.values}: must be a mapping of value names")
        values.update(loaded)
    for name in _SCALARS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    for name, kind in _PER_POOL.items():
        given = _per_pool(getattr(args, name), pools, kind, "--" + name.replace("_", "-"))
        if given is not None:
            values[name] = given.get("*") if list(given) == ["*"] else given
    return values


def run_render(args: argparse.Namespace) -> int:
    from ..fleet import Fleet
    from ..k8s.manifests import pools_of
    from ..k8s.render import render

    try:
        fleet = Fleet.from_file(args.fleet)
        pools = [p.name for p in pools_of(fleet)]
        result = render(fleet, args.out, overwrite=args.overwrite, plane_fleet=args.plane_fleet,
                        **_values(args, pools))
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {len(result.files)} files to {result.out_dir} (kubectl apply -k {result.out_dir})")
    for pool in result.pools:
        print(f"  pool {pool.name}: {result.names[pool.name]}  KEDA query: {result.queries[pool.name]}")
    print(f"  clients' control_plane: [{', '.join(result.plane_replicas)}]")
    return 0
