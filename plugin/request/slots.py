"""Endpoint slots: how per-endpoint state follows a set of endpoints that changes (``tritonmix.discovery``).

Every per-endpoint array of a client (dispatchers, tally, masks, the controller's estimators and health) is indexed
by slot, and a slot keeps its index for as long as it exists (the dispatch core's module docstring says why: a
request still out holds the bare index). A change of the set is therefore three operations, never a renumbering:

    grow(n)     new slots at the end, each with fresh state
    reset(i)    slot i handed to a new endpoint: fresh state in place (the router reuses a slot only once the
                endpoint that left it has nothing in flight)
    vacate(i)   slot i's endpoint left: no new requests; its state stays until the slot is reused

``SlotArrays`` gives a class ``grow_slots`` and ``reset_slot`` over the per-endpoint lists it names in ``SLOTS``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Tuple

__all__ = ["EndpointChange", "SlotArrays"]


@dataclasses.dataclass(frozen=True)
class EndpointChange:
    """What one reconcile did, by slot, and the slots after it: ``fleet.endpoints`` is the slot list (a vacant slot
    keeps the spec of the endpoint that left it), ``vacant[i]``: no endpoint holds slot i now."""

    fleet: Any
    joined: Tuple[int, ...] = ()      # slots a new endpoint took (appended or reused: fresh state)
    left: Tuple[int, ...] = ()        # slots whose endpoint left (removed from every dispatcher)
    replaced: Tuple[int, ...] = ()    # slots whose endpoint's spec changed in place (same name)
    drained: Tuple[int, ...] = ()     # vacant slots whose last request in flight has been recorded since
    vacant: Tuple[bool, ...] = ()
    serving: Tuple[bool, ...] = ()    # per slot: may take new requests (live, ready, not terminating)
    generations: Tuple[int, ...] = ()  # per slot: how many endpoints have held it (a follower resets on a change)

    @property
    def n_slots(self) -> int:
        return len(self.fleet.endpoints)

    @property
    def empty(self) -> bool:
        return not (self.joined or self.left or self.replaced or self.drained)


class SlotArrays:
    """Mixin for a class with per-endpoint lists: ``SLOTS`` maps each list's attribute name to its fresh value, or
    to a callable ``(self, i) -> value`` for a value built per slot (an estimator, a mutable list)."""

    SLOTS: ClassVar[Mapping[str, Any]] = {}

    def grow_slots(self, n: int) -> None:
        """Append fresh slots up to ``n`` (never shrinks)."""
        for attr, fresh in self.SLOTS.items():
            values = getattr(self, attr)
            for i in range(len(values), n):
                values.append(_fresh(self, fresh, i))

    def reset_slot(self, i: int) -> None:
        """Fresh state for slot ``i``."""
        for attr, fresh in self.SLOTS.items():
            getattr(self, attr)[i] = _fresh(self, fresh, i)


def _fresh(owner: Any, fresh: Any, i: int) -> Any:
    return fresh(owner, i) if callable(fresh) else fresh
