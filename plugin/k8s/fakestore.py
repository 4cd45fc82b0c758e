"""The object store behind ``FakeApiServer``: versioned objects as etcd keeps them, label selectors, watch events.

One revision counter over every object (as etcd's): each write takes the next revision, which is the object's
``resourceVersion``. The store keeps every version of every object and the log of changes since the last compaction,
so that it can answer a list at an older revision (a continued chunked list) and replay a watch from one. After
``compact()`` only each object's newest version and no log are kept: older revisions are gone (410 to a client).
Not thread-safe: ``FakeApiServer`` uses it from its event loop only.
"""
from __future__ import annotations

import copy
import dataclasses
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["KINDS", "Key", "Selector", "Change", "Store", "event_for", "status"]

#: kind -> (URL prefix, resource, apiVersion)
KINDS: Dict[str, Tuple[str, str, str]] = {
    "Service": ("/api/v1", "services", "v1"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", "discovery.k8s.io/v1"),
}
Key = Tuple[str, str, str]  # (kind, namespace, name)
_Object = Dict[str, Any]


def status(code: int, reason: str, message: str) -> _Object:
    """A ``Status`` object, as the API server answers errors (and ends a watch with)."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Selector:
    """A label selector of ANDed requirements: ``k=v``, ``k==v``, ``k!=v``, ``k`` (exists), ``!k`` (absent).
    ValueError for set-based requirements (``in``, ``notin``), which this server does not serve."""

    def __init__(self, text: str) -> None:
        self.requirements: List[Tuple[str, str, str]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "!=" in part:
                key, value = part.split("!=", 1)
                self.requirements.append(("!=", key.strip(), value.strip()))
            elif "=" in part:
                key, value = part.replace("==", "=").split("=", 1)
                self.requirements.append(("=", key.strip(), value.strip()))
            elif part.startswith("!"):
                self.requirements.append(("absent", part[1:].strip(), ""))
            elif " " in part or "(" in part:
                raise ValueError(f"unsupported label selector requirement {part!r}")
            else:
                self.requirements.append(("exists", part, ""))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for op, key, value in self.requirements:
            ok = {"=": labels.get(key) == value, "!=": labels.get(key) != value,
                  "exists": key in labels, "absent": key not in labels}[op]
            if not ok:
                return False
        return True


@dataclasses.dataclass(frozen=True)
class Change:
    """One write: the object before (None: created) and after (None: deleted), at revision ``rv``."""

    rv: int
    key: Key
    old: Optional[_Object]
    new: Optional[_Object]


def event_for(kind: str, namespace: str, selector: Selector, change: Change) -> Optional[_Object]:
    """The event a watcher of (kind, namespace, selector) sees for one change, by whether the object matched the
    selector before and after: ADDED (starts matching), MODIFIED (matches both), DELETED (stops matching or is
    deleted: its last state at the change's revision), or nothing."""
    if change.key[0] != kind or change.key[1] != namespace:
        return None
    before = change.old is not None and selector.matches(change.old)
    after = change.new is not None and selector.matches(change.new)
    if after:
        return {"type": "MODIFIED" if before else "ADDED", "object": change.new}
    if before:
        gone = copy.deepcopy(change.old)
        gone["metadata"]["resourceVersion"] = str(change.rv)
        return {"type": "DELETED", "object": gone}
    return None


class Store:
    """Versioned objects (module docstring): Services and EndpointSlices listed and watched, others kept."""

    def __init__(self) -> None:
        self.rv = 0
        self.compacted_rv = 0
        self._versions: Dict[Key, List[Tuple[int, Optional[_Object]]]] = {}
        self._log: List[Change] = []

    def current(self, key: Key) -> Optional[_Object]:
        versions = self._versions.get(key)
        return versions[-1][1] if versions else None

    def apply(self, obj: _Object) -> Change:
        """Create or replace ``obj`` (by kind, namespace, name), stamped with the next revision, its uid (kept over
        replacements) and, for the KINDS listed and watched, apiVersion. A kind outside KINDS (a Deployment the
        cluster check applies) is kept as given: read and written one by one, never listed or watched. ValueError
        for no kind or a missing name or namespace."""
        kind = obj.get("kind")
        if not kind:
            raise ValueError("an object needs a kind")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") or not meta.get("namespace"):
            raise ValueError("an object needs metadata.name and metadata.namespace")
        key = (kind, meta["namespace"], meta["name"])
        old = self.current(key)
        self.rv += 1
        if kind in KINDS:
            obj["apiVersion"] = KINDS[kind][2]
        meta["resourceVersion"] = str(self.rv)
        meta["uid"] = (old or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return self._record(key, old, obj)

    def objects(self, kind: Optional[str], namespace: str) -> List[_Object]:
        """The current objects of ``kind`` (None: every kind) in ``namespace``, sorted by (kind, name)."""
        return [versions[-1][1] for (k, ns, _), versions in sorted(self._versions.items())
                if (kind is None or k == kind) and ns == namespace and versions[-1][1] is not None]

    def delete(self, key: Key) -> Change:
        old = self.current(key)
        if old is None:
            raise KeyError(f"no {key[0]} {key[1]}/{key[2]}")
        self.rv += 1
        return self._record(key, old, None)

    def _record(self, key: Key, old: Optional[_Object], new: Optional[_Object]) -> Change:
        self._versions.setdefault(key, []).append((self.rv, new))
        change = Change(self.rv, key, old, new)
        self._log.append(change)
        return change

    def compact(self) -> int:
        """Forget every revision before now; returns the compaction's revision."""
        self.compacted_rv = self.rv
        self._log = []
        for key, versions in self._versions.items():
            self._versions[key] = versions[-1:]
        return self.compacted_rv

    def changes_since(self, rv: int) -> List[Change]:
        """The changes after revision ``rv`` (which must be >= ``compacted_rv``), oldest first."""
        return [change for change in self._log if change.rv > rv]

    def snapshot(self, kind: str, namespace: str, selector: Selector, at_rv: int) -> List[_Object]:
        """The matching objects as they were at ``at_rv``, sorted by name (the order chunks follow)."""
        items = []
        for (k, ns, _name), versions in sorted(self._versions.items()):
            if k != kind or ns != namespace:
                continue
            state = None
            for rv, obj in versions:
                if rv <= at_rv:
                    state = obj
            if state is not None and selector.matches(state):
                items.append(state)
        return items
