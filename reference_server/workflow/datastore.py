"""The scheduler's data store: current elements per type, and the deltas between flushes.

Element types (topics) are Cylc's, as JSON objects (shapes in the workflow design notes):
``workflow`` (one element), ``tasks`` (task definitions), ``task_proxies``, ``jobs`` and
``edges``. The scheduler :meth:`~DataStore.put`\\ s an element whenever it may have changed
and :meth:`~DataStore.delete`\\ s it when it leaves the store; :meth:`~DataStore.flush` then
returns one batch ``{topic: {"added": [...], "updated": [...], "pruned": [ids]}}`` with only
non-empty topics, in :data:`TOPICS` order (the publisher adds ``seq``, ``time`` and the ``all``
message). ``added`` and ``updated`` carry whole elements (an update replaces the element);
putting an unchanged element records nothing, and an element added then deleted between two
flushes is not reported at all. Cylc's data store sends protobuf deltas with changed fields
only (reference/workflow.md section 4); whole elements keep subscribers simple.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["TOPICS", "DataStore", "Delta", "DeltaBatch", "UnknownElementType"]

TOPICS: Final = ("workflow", "tasks", "task_proxies", "jobs", "edges")
"""Element types, in publishing order."""

Delta = dict[str, list[Any]]
"""``{"added": [element, ...], "updated": [element, ...], "pruned": [id, ...]}``."""

DeltaBatch = dict[str, Delta]
"""Topic → delta, only non-empty topics."""


class UnknownElementType(KeyError):
    """An element type that is not one of :data:`TOPICS` (the message lists the valid ones)."""

    def __init__(self, element_type: object) -> None:
        super().__init__(element_type)
        self.element_type = element_type

    def __str__(self) -> str:
        return f"unknown element type {self.element_type!r}; expected one of {', '.join(TOPICS)}"


class DataStore:
    """Current elements by topic and id, plus what changed since the last flush."""

    def __init__(self) -> None:
        self._elements: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TOPICS}
        self._published: dict[str, set[str]] = {t: set() for t in TOPICS}
        self._dirty: dict[str, set[str]] = {t: set() for t in TOPICS}

    def _topic(self, topic: str) -> dict[str, dict[str, Any]]:
        try:
            return self._elements[topic]
        except KeyError:
            raise UnknownElementType(topic) from None

    def put(self, topic: str, element: Mapping[str, Any]) -> None:
        """Store `element` (it must have a string ``id``) as the current one of its id.

        Raises:
            UnknownElementType: `topic` is not one of TOPICS.
        """
        elements = self._topic(topic)
        element_id = str(element["id"])
        if elements.get(element_id) == element:
            return
        elements[element_id] = copy.deepcopy(dict(element))
        self._dirty[topic].add(element_id)

    def delete(self, topic: str, element_id: str) -> None:
        """Remove the element `element_id` (no-op if absent)."""
        elements = self._topic(topic)
        if elements.pop(element_id, None) is not None:
            self._dirty[topic].add(element_id)

    def get(self, topic: str, element_id: str) -> dict[str, Any] | None:
        """A deep copy of one element, or None."""
        element = self._topic(topic).get(element_id)
        return copy.deepcopy(element) if element is not None else None

    def ids(self, topic: str) -> list[str]:
        """Ids of the current elements of `topic`, in insertion order."""
        return list(self._topic(topic))

    def elements(self, topic: str) -> list[dict[str, Any]]:
        """Deep copies of the current elements of `topic`, in insertion order.

        Raises:
            UnknownElementType: `topic` is not one of TOPICS.
        """
        return [copy.deepcopy(e) for e in self._topic(topic).values()]

    def has_changes(self) -> bool:
        """True if a flush now would report something."""
        return any(self._pending(t) for t in TOPICS)

    def _pending(self, topic: str) -> bool:
        elements = self._elements[topic]
        published = self._published[topic]
        return any(i in elements or i in published for i in self._dirty[topic])

    def flush(self) -> DeltaBatch:
        """The changes since the previous flush, then forget them.

        Returns:
            ``{topic: {"added", "updated", "pruned"}}`` for each topic with changes, in
            TOPICS order; ``{}`` if nothing changed.
        """
        batch: DeltaBatch = {}
        for topic in TOPICS:
            elements = self._elements[topic]
            published = self._published[topic]
            added: list[Any] = []
            updated: list[Any] = []
            pruned: list[Any] = []
            for element_id in sorted(self._dirty[topic]):
                present = element_id in elements
                if present and element_id in published:
                    updated.append(copy.deepcopy(elements[element_id]))
                elif present:
                    added.append(copy.deepcopy(elements[element_id]))
                    published.add(element_id)
                elif element_id in published:
                    pruned.append(element_id)
                    published.discard(element_id)
            self._dirty[topic].clear()
            if added or updated or pruned:
                batch[topic] = {"added": added, "updated": updated, "pruned": pruned}
        return batch
