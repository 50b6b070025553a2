"""The data store's delta bookkeeping (runwire.reference_server.workflow.datastore)."""

from __future__ import annotations

import pytest

from runwire.reference_server.workflow.datastore import TOPICS, DataStore, UnknownElementType


def test_added_updated_pruned_between_flushes() -> None:
    store = DataStore()
    store.put("jobs", {"id": "1/a/01", "state": "submitted"})
    store.put("edges", {"id": "1/a=>1/b", "source": "1/a", "target": "1/b"})
    assert store.flush() == {
        "jobs": {"added": [{"id": "1/a/01", "state": "submitted"}], "updated": [], "pruned": []},
        "edges": {
            "added": [{"id": "1/a=>1/b", "source": "1/a", "target": "1/b"}],
            "updated": [],
            "pruned": [],
        },
    }
    assert store.flush() == {}
    store.put("jobs", {"id": "1/a/01", "state": "submitted"})  # unchanged: nothing to say
    assert not store.has_changes()
    store.put("jobs", {"id": "1/a/01", "state": "running"})
    store.delete("edges", "1/a=>1/b")
    assert store.flush() == {
        "jobs": {"added": [], "updated": [{"id": "1/a/01", "state": "running"}], "pruned": []},
        "edges": {"added": [], "updated": [], "pruned": ["1/a=>1/b"]},
    }


def test_short_lived_elements_are_not_reported_and_readded_ones_are_updates() -> None:
    store = DataStore()
    store.put("task_proxies", {"id": "1/a"})
    store.delete("task_proxies", "1/a")
    assert store.flush() == {}
    store.put("task_proxies", {"id": "1/b", "state": "waiting"})
    store.flush()
    store.delete("task_proxies", "1/b")
    store.put("task_proxies", {"id": "1/b", "state": "preparing"})
    assert store.flush()["task_proxies"]["updated"] == [{"id": "1/b", "state": "preparing"}]


def test_elements_are_copies() -> None:
    store = DataStore()
    element = {"id": "w", "broadcasts": []}
    store.put("workflow", element)
    element["broadcasts"].append(1)
    assert store.elements("workflow") == [{"id": "w", "broadcasts": []}]
    store.elements("workflow")[0]["broadcasts"].append(2)
    assert store.get("workflow", "w") == {"id": "w", "broadcasts": []}
    assert store.ids("workflow") == ["w"]


def test_topics_are_published_in_order() -> None:
    store = DataStore()
    for topic in reversed(TOPICS):
        store.put(topic, {"id": "x"})
    assert list(store.flush()) == list(TOPICS)


def test_unknown_topic() -> None:
    with pytest.raises(UnknownElementType) as info:
        DataStore().elements("families")
    assert str(info.value) == (
        "unknown element type 'families'; expected one of workflow, tasks, task_proxies, "
        "jobs, edges"
    )
