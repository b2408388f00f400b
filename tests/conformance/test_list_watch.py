"""List and watch: selectors, pagination, resume from resourceVersion, 410 Gone, bookmarks."""
from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget, widgets_path


class Stream:
    """A raw watch stream read in a thread; `next()` waits for an event with a deadline."""

    def __init__(self, raw, path: str) -> None:
        self.response = raw.request("GET", path, preload=False)
        assert self.response.status == 200, self.response.data
        self.events: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.strip():
                    self.events.put(json.loads(line))
        except Exception:  # the connection was shut down by close()
            pass
        finally:
            self.ended.set()

    def next(self, timeout: float = 10) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no watch event within {timeout}s")

    def next_of(self, types: set[str], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if event["type"] in types:
                return event

    def close(self) -> None:
        # shutdown() unblocks the reader thread at once; close() alone would wait for the stream.
        if not self.ended.is_set():
            try:
                self.response.shutdown()
            except RuntimeError:  # it ended meanwhile and went back to the pool
                pass
        self.response.close()


@pytest.fixture()
def watch(raw):
    streams = []

    def open_(path: str) -> Stream:
        stream = Stream(raw, path)
        streams.append(stream)
        return stream

    yield open_
    for stream in streams:
        stream.close()


OURS = {"a", "b", "c", "d"}


def _labels(core, namespace):
    for name, labels in [("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev", "tier": "web"}),
                         ("c", {"env": "prod"}), ("d", {})]:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})


def _ours(items) -> list[str]:
    # A real cluster adds objects of its own to every namespace at any moment (the controller
    # manager's kube-root-ca.crt ConfigMap, say): the test judges the selector on the ones it made.
    return sorted(i.metadata.name for i in items if i.metadata.name in OURS)


@pytest.mark.parametrize("selector, expected", [
    pytest.param("env=prod", ["a", "c"], id="equals"),
    pytest.param("env==prod", ["a", "c"], id="double-equals"),
    pytest.param("env!=prod", ["b", "d"], id="not-equals"),
    pytest.param("env in (dev,qa)", ["b"], id="in"),
    pytest.param("env notin (dev)", ["a", "c", "d"], id="notin"),
    pytest.param("tier", ["a", "b"], id="exists"),
    pytest.param("!tier", ["c", "d"], id="not-exists"),
    pytest.param("env=prod,tier=web", ["a"], id="and"),
])
def test_label_selectors(core, namespace, selector, expected):
    _labels(core, namespace)
    items = core.list_namespaced_config_map(namespace, label_selector=selector).items
    assert _ours(items) == expected


@pytest.mark.parametrize("selector, expected", [
    pytest.param("metadata.name=b", ["b"], id="name"),
    pytest.param("metadata.name==b", ["b"], id="name-double-equals"),
    pytest.param("metadata.name!=b", ["a", "c", "d"], id="name-not"),
])
def test_field_selectors(core, namespace, selector, expected):
    _labels(core, namespace)
    items = core.list_namespaced_config_map(namespace, field_selector=selector).items
    assert _ours(items) == expected


def test_field_selector_by_namespace_across_namespaces(core, namespace):
    _labels(core, namespace)
    items = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={namespace}").items
    assert {i.metadata.namespace for i in items} == {namespace}
    assert _ours(items) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("path, message", [
    pytest.param(f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}", "field label not supported: spec.size",
                 id="custom"),
    pytest.param("/api/v1/namespaces/{namespace}/pods", "field label not supported: spec.size", id="pods"),
    pytest.param("/api/v1/namespaces/{namespace}/configmaps",
                 '"spec.size" is not a known field selector: only "metadata.name", "metadata.namespace"',
                 id="configmaps"),
])
def test_unsupported_field_selector_is_bad_request(raw, namespace, path, message):
    code, status = raw.json("GET", path.format(namespace=namespace) + "?fieldSelector=spec.size%3D1")
    assert (code, status["reason"], status["message"]) == (400, "BadRequest", message)


def test_event_field_selectors_for_describe(core, namespace):
    for name in ("w1", "w2"):
        core.create_namespaced_event(namespace, {"metadata": {"generateName": "e-"}, "reason": "R", "message": name,
                                                 "involvedObject": {"kind": "Widget", "name": name,
                                                                    "namespace": namespace, "uid": f"uid-{name}"}})
    selector = f"involvedObject.name=w1,involvedObject.namespace={namespace},involvedObject.kind=Widget"
    assert [e.message for e in core.list_namespaced_event(namespace, field_selector=selector).items] == ["w1"]
    by_uid = core.list_namespaced_event(namespace, field_selector="involvedObject.uid=uid-w2").items
    assert [e.message for e in by_uid] == ["w2"]


def test_list_shape_and_pagination(custom, namespace):
    for i in range(5):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget(f"w{i}"))
    full = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert full["kind"] == "WidgetList" and full["apiVersion"] == f"{GROUP}/{VERSION}"
    newest = max(int(i["metadata"]["resourceVersion"]) for i in full["items"])
    assert int(full["metadata"]["resourceVersion"]) >= newest
    names, token, pages = [], None, 0
    while True:
        page = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=2,
                                                    **({"_continue": token} if token else {}))
        pages += 1
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert pages == 3 and names == [f"w{i}" for i in range(5)]


def test_cluster_wide_list(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    assert (namespace, "w") in {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items}


def test_watch_without_resource_version_starts_with_current_objects(custom, namespace, watch):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("old"))
    stream = watch(widgets_path(namespace) + "?watch=true")
    first = stream.next()
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "old")
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "old", {"spec": {"size": 2}})
    modified = stream.next()
    assert modified["type"] == "MODIFIED" and modified["object"]["spec"]["size"] == 2
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "old")
    deleted = stream.next()
    assert deleted["type"] == "DELETED" and deleted["object"]["metadata"]["name"] == "old"


def test_watch_resumes_from_resource_version(custom, namespace, watch):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"spec": {"size": 2}})
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"spec": {"size": 3}})
    stream = watch(widgets_path(namespace) + f"?watch=1&resourceVersion={created['metadata']['resourceVersion']}")
    sizes = [stream.next()["object"]["spec"]["size"] for _ in range(2)]
    assert sizes == [2, 3]


def test_watch_too_old_resource_version_is_gone(custom, namespace, watch):
    # A watch resumes only inside the server's window of events. The window of a custom resource
    # starts when the server begins serving it (kube-apiserver: its watch cache's initial list), long
    # after resourceVersion 1, so resuming from 1 is an ERROR event carrying 410 on any server.
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    stream = watch(widgets_path(namespace) + "?watch=true&resourceVersion=1")
    event = stream.next()
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
    assert event["object"]["reason"] in ("Expired", "Gone")
    assert event["object"]["message"].startswith("too old resource version: 1 (")
    assert stream.ended.wait(10), "the watch did not end after its ERROR event"


# embedded_only: kube-apiserver's window holds up to 100k events per resource and keeps growing while
# they are younger than 75 s, so no test can push an event out of it on a real server.
@pytest.mark.embedded_only
def test_watch_window_overflow_is_gone(core, namespace, watch, local_cluster):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    since = core.read_namespaced_config_map("c", namespace).metadata.resource_version
    window = local_cluster.local.cluster.store.history_size
    for i in range(window + 1):
        core.patch_namespaced_config_map("c", namespace, {"data": {"i": str(i)}})
    stream = watch(f"/api/v1/namespaces/{namespace}/configmaps?watch=true&resourceVersion={since}")
    event = stream.next()
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_label_selector_watch_sees_objects_enter_and_leave(core, namespace, watch):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c", "labels": {"pod": "p1"}}})
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    stream = watch(f"/api/v1/namespaces/{namespace}/configmaps?watch=true&labelSelector=pod%3Dp2&resourceVersion={rv}")
    core.patch_namespaced_config_map("c", namespace, {"metadata": {"labels": {"pod": "p2"}}})
    entered = stream.next()
    assert (entered["type"], entered["object"]["metadata"]["labels"]["pod"]) == ("ADDED", "p2")
    core.patch_namespaced_config_map("c", namespace, {"data": {"x": "1"}})
    assert stream.next()["type"] == "MODIFIED"
    core.patch_namespaced_config_map("c", namespace, {"metadata": {"labels": {"pod": "p3"}}})
    left = stream.next()
    assert left["type"] == "DELETED" and left["object"]["metadata"]["name"] == "c"


def test_watch_timeout_ends_the_stream(namespace, watch):
    started = time.monotonic()
    stream = watch(f"/api/v1/namespaces/{namespace}/configmaps?watch=true&timeoutSeconds=1")
    assert stream.ended.wait(15), "the watch did not end after timeoutSeconds"
    assert time.monotonic() - started < 15


def test_watch_bookmarks(core, namespace, watch):
    # Bookmarks are never promised; kube-apiserver sends one about 2 s before timeoutSeconds runs out
    # (else about once a minute) once its watch cache has seen an event, hence the write.
    stream = watch(f"/api/v1/namespaces/{namespace}/configmaps?watch=true&allowWatchBookmarks=true"
                   f"&resourceVersion=0&timeoutSeconds=6")
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    bookmark = stream.next_of({"BOOKMARK"}, timeout=15)
    assert (bookmark["object"]["kind"], bookmark["object"]["apiVersion"]) == ("ConfigMap", "v1")
    meta = bookmark["object"]["metadata"]
    assert int(meta["resourceVersion"]) >= int(created.metadata.resource_version)
    # Nothing else: a bookmark carries only the resourceVersion (a typed one also "creationTimestamp": null).
    assert {key: value for key, value in meta.items() if key != "resourceVersion" and value} == {}
    assert stream.ended.wait(15), "the watch did not end after timeoutSeconds"


def test_cluster_wide_watch_and_namespace_isolation(core, namespace, watch):
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    everywhere = watch(f"/api/v1/configmaps?watch=true&resourceVersion={rv}")
    elsewhere = watch(f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "seen"}})
    # Other objects come and go meanwhile (a real cluster's kube-root-ca.crt in new namespaces).
    event = everywhere.next_of({"ADDED"})
    while (event["object"]["metadata"].get("namespace"), event["object"]["metadata"]["name"]) != (namespace, "seen"):
        event = everywhere.next_of({"ADDED"})
    while not elsewhere.events.empty():
        assert elsewhere.events.get()["object"]["metadata"].get("namespace") == "default"


def test_streaming_lists_are_served_or_refused(core, raw, namespace, watch):
    # sendInitialEvents (the WatchList feature) is off in v1.28 (422, "forbidden for watch unless the
    # WatchList feature gate is enabled") and on in 1.32+: both are Kubernetes. When served, the
    # current objects come as ADDED, then a bookmark annotated k8s.io/initial-events-end.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    path = f"/api/v1/namespaces/{namespace}/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
    code, status = raw.json("GET", path)  # without resourceVersionMatch=NotOlderThan: refused everywhere
    assert (code, status["reason"]) == (422, "Invalid")
    assert "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan" in status["message"]
    response = raw.request("GET", path + "&resourceVersionMatch=NotOlderThan&timeoutSeconds=5", preload=True)
    if response.status == 422:
        assert "WatchList feature gate" in response.data.decode()
        return
    assert response.status == 200
    events = [json.loads(line) for line in response.data.splitlines() if line.strip()]
    added = [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"]
    assert "c" in added
    [end] = [e for e in events if e["type"] == "BOOKMARK"
             and (e["object"]["metadata"].get("annotations") or {}).get("k8s.io/initial-events-end") == "true"]
    assert events.index(end) > max(i for i, e in enumerate(events) if e["type"] == "ADDED")


def test_watch_through_a_finalized_deletion(custom, namespace, watch):
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["metadata"]["resourceVersion"]
    stream = watch(widgets_path(namespace) + f"?watch=true&resourceVersion={rv}")
    body = widget("w")
    body["metadata"]["finalizers"] = ["conformance.gigafactory.dev/hold"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    released = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w",
                                                     {"metadata": {"finalizers": None}})
    assert "finalizers" not in released["metadata"] and released["metadata"]["deletionTimestamp"]
    added, deleting, deleted = stream.next(), stream.next(), stream.next()
    assert [added["type"], deleting["type"], deleted["type"]] == ["ADDED", "MODIFIED", "DELETED"]
    assert deleting["object"]["metadata"]["deletionTimestamp"] and deleting["object"]["metadata"]["generation"] == 2
    # The write that removed the last finalizer is never stored: DELETED carries the last stored state.
    assert deleted["object"]["metadata"]["finalizers"] == ["conformance.gigafactory.dev/hold"]
    assert int(deleted["object"]["metadata"]["resourceVersion"]) > int(deleting["object"]["metadata"]["resourceVersion"])
