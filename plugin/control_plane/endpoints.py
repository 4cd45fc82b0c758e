"""The plane's endpoint set: slots that follow a discovery source, the set as it travels to followers, and a plan
moved from the plane's slots into a follower's.

Every per-endpoint array of the plane (the Board's counters, the Controller's state, the plan's vectors, the load
channel's sums) is indexed by the plane's SLOT, as a client's are by its own (``tritonmix.request.slots``): a slot
keeps its index while its endpoint lives, a left endpoint's slot turns vacant and the next newcomer takes it with a
new generation (fresh state everywhere). Followers hold slots of their own, numbered by their own history, so
nothing crosses the wire by position alone:

    plane -> follower   the set, whenever its version moved past the one the follower holds:
                        {"version": V, "discovery": bool,
                         "items": [{"slot": i, "state": "serving" | "draining" | "not_ready", <EndpointSpec fields>}]}
                        (vacant slots are not listed); the plan's vectors are by plane slot, and ``remap_plan``
                        moves them to the follower's slots BY NAME through the items' slot numbers
    follower -> plane   a report names the endpoint of each of its slots (``report``); the Board adds a client's
                        figures to the plane slot of the same name and drops a name the plane no longer has

Why a name and not a (slot, generation) pair: a plane and its followers number slots independently, so only the
name (a pod's ``namespace/pod``) is common to both; a slot's generation guards the state that stays on one side
(a reused slot's counters, its scrapes), never a message.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..controller.plan import ModelRoute, Plan
from ..discovery import EndpointState
from ..fleet import EndpointSpec
from ..request.slots import EndpointChange

__all__ = ["EndpointSet", "PlaneSet", "parse_set", "remap_plan", "STATES"]

#: an endpoint's state as followers read it: takes new requests; finishes what it holds and takes nothing new; known
#: but not ready (takes nothing until it turns ready)
STATES = ("serving", "draining", "not_ready")


class EndpointSet:
    """The plane's slots (module docstring). ``apply(states)`` reconciles with a whole discovered set by name and
    says what changed; ``version`` counts the changes (joins, leaves, spec and state changes). Not thread-safe: the
    Board calls it under its lock."""

    def __init__(self, names: Sequence[str], specs: Optional[Sequence[EndpointSpec]] = None,
                 discovery: bool = False) -> None:
        self.names: List[str] = list(names)
        self.specs: List[Optional[EndpointSpec]] = list(specs) if specs is not None else [None] * len(self.names)
        n = len(self.names)
        self.discovery = discovery
        self.generation = [1] * n
        self.ready = [True] * n
        self.terminating = [False] * n
        self.vacant = [False] * n
        #: per slot, the set version at which its endpoint took it (the load channel drops older figures there)
        self.since = [1] * n
        self.version = 1
        self._slot: Dict[str, int] = {name: i for i, name in enumerate(self.names)}

    @property
    def n(self) -> int:
        return len(self.names)

    def slot(self, name: str) -> Optional[int]:
        """The live slot of ``name`` (None: the plane does not have it now)."""
        return self._slot.get(name)

    def serving(self) -> Tuple[bool, ...]:
        return tuple(r and not t and not v for r, t, v in zip(self.ready, self.terminating, self.vacant))

    def state(self, i: int) -> str:
        if self.terminating[i]:
            return "draining"
        return "serving" if self.ready[i] else "not_ready"

    def apply(self, states: Sequence[Any]) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        """Reconcile with the whole current set (``EndpointState``s or ready ``EndpointSpec``s): (joined, left,
        changed) slots, changed: a spec changed in place or the state (ready, terminating) moved. A left endpoint's slot turns vacant; a newcomer takes the lowest vacant slot (the plane
        holds no request, so a slot is free the moment it is vacated) or a new one at the end. ValueError for two
        states of one name or one without a url; nothing changes then."""
        wanted: Dict[str, Tuple[EndpointSpec, bool, bool]] = {}
        for s in states:
            spec, ready, terminating = (s, True, False) if isinstance(s, EndpointSpec) else \
                (s.spec, bool(s.ready), bool(s.terminating))
            if spec.name in wanted:
                raise ValueError(f"endpoint {spec.name!r} appears twice in the discovered set")
            if not spec.url:
                raise ValueError(f"endpoint {spec.name!r} has no url; a discovered endpoint needs one")
            wanted[spec.name] = (spec, ready, terminating)
        version = self.version + 1
        left = tuple(sorted(self._slot.pop(name) for name in list(self._slot) if name not in wanted))
        for i in left:
            self.vacant[i], self.ready[i], self.terminating[i] = True, False, False
        free = [i for i in range(self.n) if self.vacant[i]]
        joined, replaced = [], []
        for name, (spec, ready, terminating) in wanted.items():
            i = self._slot.get(name)
            if i is None:
                i = free.pop(0) if free else self._grow()
                self._slot[name] = i
                self.names[i], self.specs[i], self.vacant[i] = name, spec, False
                self.generation[i] += 1
                self.since[i] = version
                joined.append(i)
            elif spec != self.specs[i]:
                self.specs[i] = spec
                replaced.append(i)
            if (self.ready[i], self.terminating[i]) != (ready, terminating):
                self.ready[i], self.terminating[i] = ready, terminating
                if i not in joined and i not in replaced:
                    replaced.append(i)
        if joined or left or replaced:
            self.version = version
        return tuple(joined), left, tuple(replaced)

    def _grow(self) -> int:
        self.names.append("")
        self.specs.append(None)
        for column, fresh in ((self.generation, 0), (self.ready, False), (self.terminating, False),
                              (self.vacant, True), (self.since, 0)):
            column.append(fresh)
        return self.n - 1

    def change(self, fleet: Any, joined: Tuple[int, ...] = (), left: Tuple[int, ...] = (),
               replaced: Tuple[int, ...] = ()) -> EndpointChange:
        """The slots as an ``EndpointChange`` (what the Controller follows, ``Router.reap``'s shape), over ``fleet``
        with the slot specs as its endpoints (a vacant slot keeps the spec of the endpoint that left it)."""
        eps = tuple(s if s is not None else EndpointSpec(name, "unknown", 0.0) for s, name in zip(self.specs, self.names))
        return EndpointChange(dataclasses.replace(fleet, endpoints=eps), joined, left, replaced, (),
                              tuple(self.vacant), self.serving(), tuple(self.generation))

    def to_wire(self) -> Dict[str, Any]:
        """The set as followers get it (module docstring)."""
        items = []
        for i, (name, spec) in enumerate(zip(self.names, self.specs)):
            if self.vacant[i]:
                continue
            item: Dict[str, Any] = spec.to_dict() if spec is not None else {"name": name}
            item.update(slot=i, state=self.state(i))
            items.append(item)
        return {"version": self.version, "discovery": self.discovery, "items": items}


@dataclasses.dataclass(frozen=True)
class PlaneSet:
    """A plane's set as a follower holds it: its version, whether it follows a discovery source, the plane slot of
    each live name, and the states to apply (``Router.apply_endpoints``)."""

    version: int
    discovery: bool
    slots: Mapping[str, int]
    states: Tuple[EndpointState, ...]

    @property
    def n(self) -> int:
        """The plane's slot count as far as this set shows it (one past its highest live slot)."""
        return max(self.slots.values(), default=-1) + 1


def parse_set(raw: Any) -> PlaneSet:
    """A set from a sync answer (``EndpointSet.to_wire``); ValueError naming what is wrong."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("items"), list):
        raise ValueError("the plane's endpoint set must be an object with 'version' and 'items'")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError("the plane's endpoint set needs an integer 'version'")
    slots: Dict[str, int] = {}
    specs: List[Dict[str, Any]] = []
    flags: List[Tuple[bool, bool]] = []
    for k, item in enumerate(raw["items"]):
        if not isinstance(item, Mapping):
            raise ValueError(f"endpoint set item {k} must be an object")
        fields = dict(item)
        slot, state = fields.pop("slot", None), fields.pop("state", "serving")
        if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0 or state not in STATES:
            raise ValueError(f"endpoint set item {k}: 'slot' must be an integer >= 0 and 'state' one of "
                             f"{', '.join(STATES)}")
        name = fields.get("name")
        if not isinstance(name, str) or name in slots:
            raise ValueError(f"endpoint set item {k}: a missing or repeated name {str(name)[:64]!r}")
        slots[name] = slot
        specs.append(fields)
        flags.append((state != "not_ready", state == "draining"))
    if len(set(slots.values())) != len(slots):
        raise ValueError("endpoint set items share a slot")
    states = tuple(EndpointState(_spec(fields, k), ready, terminating)
                   for k, (fields, (ready, terminating)) in enumerate(zip(specs, flags)))
    return PlaneSet(version, bool(raw.get("discovery", False)), slots, states)


_SPEC_FIELDS = {f.name: f for f in dataclasses.fields(EndpointSpec)}


def _spec(fields: Mapping[str, Any], k: int) -> EndpointSpec:
    """An ``EndpointSpec`` from its ``to_dict`` form (a discovered name such as ``namespace/pod`` is not a fleet
    file's name, so the fleet file's checks do not apply); ValueError for an unknown field or a wrong type."""
    unknown = sorted(str(x) for x in fields if x not in _SPEC_FIELDS)
    if unknown:
        raise ValueError(f"endpoint set item {k}: unknown field(s) {', '.join(unknown)}")
    price = fields.get("price_per_hour")
    if not isinstance(fields.get("url"), str) or not isinstance(fields.get("accelerator"), str) or \
            isinstance(price, bool) or not isinstance(price, (int, float)):
        raise ValueError(f"endpoint set item {k}: 'url' and 'accelerator' must be strings and 'price_per_hour' a "
                         "number")
    return EndpointSpec(**{**fields, "price_per_hour": float(price)})


def remap_plan(plan: Plan, slots: Mapping[str, int], names: Sequence[str], vacant: Sequence[bool]) -> Plan:
    """``plan`` (vectors by plane slot) moved to a follower's slots by name: follower slot j takes plane slot
    ``slots[names[j]]``; a vacant follower slot, or a name the plane does not list, gets weight 0, load 0, no limit
    and unavailable. O(n x vectors)."""
    n = len(plan.endpoints)
    src = [None if (j < len(vacant) and vacant[j]) else slots.get(name) for j, name in enumerate(names)]
    src = [s if s is not None and s < n else None for s in src]

    def move(values: Sequence[Any], fill: Any) -> Tuple[Any, ...]:
        return tuple(fill if s is None else values[s] for s in src)

    def model_plan(p: Any) -> Any:
        return dataclasses.replace(p, **{f.name: move(getattr(p, f.name), 0.0) for f in dataclasses.fields(p)
                                         if isinstance(getattr(p, f.name), tuple)})

    def route(r: ModelRoute) -> ModelRoute:
        inner = r.proportional
        return ModelRoute(model_plan(r.plan), move(r.limits, 0), route(inner) if inner is not None else None)

    models = tuple((m, route(r)) for m, r in plan.models)
    return Plan(plan.generation, plan.at_s, tuple(names), move(plan.available, False), model_plan(plan.default),
                models)


def wire_json(payload: Mapping[str, Any]) -> str:
    """The set's JSON text, serialised once per version and spliced into every answer."""
    return json.dumps(payload, separators=(",", ":"))
