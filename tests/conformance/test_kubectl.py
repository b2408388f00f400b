"""kubectl against the server: apply (create and update), get, -o yaml, -w, describe, delete, explain."""
from __future__ import annotations

import subprocess
import time

import yaml

from tests.conftest import wait_for

WIDGET = """
apiVersion: conformance.gigafactory.dev/v1
kind: Widget
metadata:
  name: k1
spec:
  size: {size}
  color: blue
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: nginx:{tag}
        env: [{{name: A, value: "1"}}]
"""


def test_apply_create_and_update_custom_resource(kubectl, namespace):
    out = kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=3)).stdout
    assert "widget.conformance.gigafactory.dev/k1 created" in out
    out = kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=4)).stdout
    assert "configured" in out
    obj = yaml.safe_load(kubectl("get", "widget", "k1", "-n", namespace, "-o", "yaml").stdout)
    assert obj["spec"]["size"] == 4 and obj["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    out = kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=4)).stdout
    assert "unchanged" in out


def test_apply_builtin_with_strategic_merge(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(tag="1"))
    out = kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(tag="2")).stdout
    assert "deployment.apps/web configured" in out
    image = kubectl("get", "deploy", "web", "-n", namespace, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert image.stdout == "nginx:2"


def test_apply_rejects_invalid_with_the_server_message(kubectl, namespace):
    result = kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=5000), check=False)
    assert result.returncode != 0
    assert "spec.size: Invalid value: 5000: spec.size in body should be less than or equal to 1000" in result.stderr


def test_get_prints_printer_columns(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=7))
    out = kubectl("get", "wg", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "COLOR", "PHASE", "AGE"]
    cells = out[1].split()  # PHASE is unset: an empty cell, so four words
    assert cells[:3] == ["k1", "7", "blue"] and len(cells) == 4 and cells[3].endswith("s")
    listed = kubectl("get", "conformance", "-n", namespace).stdout.splitlines()  # by category
    assert listed[1].split()[0] in ("k1", "widget.conformance.gigafactory.dev/k1")


def test_get_watch_streams_changes(kubectl, namespace, kubeconfig):
    kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=1))
    watcher = subprocess.Popen(
        [*_kubectl_prefix(kubectl), "get", "widgets", "-n", namespace, "-w", "--output-watch-events"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []

        def saw(text):
            return any(text in line for line in lines)

        import threading
        threading.Thread(target=lambda: [lines.append(l) for l in watcher.stdout], daemon=True).start()
        wait_for(lambda: saw("k1"), timeout=20, message="the initial listing")
        kubectl("patch", "widget", "k1", "-n", namespace, "--type", "merge", "-p", '{"spec":{"size":42}}')
        wait_for(lambda: saw("MODIFIED") and saw("42"), timeout=20, message="the change to stream")
    finally:
        watcher.terminate()
        watcher.wait(10)


def _kubectl_prefix(kubectl):
    # Recover the exact command line the fixture uses, with a harmless subcommand.
    result = kubectl("version", "--client", "-o", "yaml")
    return result.args[:result.args.index("version")]


def test_describe_shows_events(kubectl, core, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=1))
    uid = kubectl("get", "widget", "k1", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    core.create_namespaced_event(namespace, {
        "metadata": {"generateName": "k1-"}, "reason": "Polished", "message": "the widget shines", "type": "Normal",
        "involvedObject": {"apiVersion": "conformance.gigafactory.dev/v1", "kind": "Widget", "name": "k1",
                           "namespace": namespace, "uid": uid}})
    out = kubectl("describe", "widget", "k1", "-n", namespace).stdout
    assert "Polished" in out and "the widget shines" in out


def test_delete_and_create_namespace(kubectl):
    name = f"t-kubectl-{int(time.time() * 1000) % 10**8}"
    assert f"namespace/{name} created" in kubectl("create", "ns", name).stdout
    kubectl("create", "configmap", "c", "-n", name, "--from-literal=a=b")
    assert kubectl("get", "cm", "c", "-n", name, "-o", "jsonpath={.data.a}").stdout == "b"
    kubectl("delete", "ns", name, "--wait=false")


def test_delete_resource(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WIDGET.format(size=1))
    assert 'widget.conformance.gigafactory.dev "k1" deleted' in kubectl("delete", "widget", "k1", "-n", namespace).stdout
    result = kubectl("get", "widget", "k1", "-n", namespace, check=False)
    assert result.returncode != 0 and "NotFound" in result.stderr


def test_explain_shows_crd_descriptions(kubectl):
    out = kubectl("explain", "widget.spec.retry").stdout
    assert "How it is retried." in out and "limit" in out and "How many times it is retried." in out


def test_get_prints_builtin_columns(kubectl, core, api_client, namespace):
    # The server prints built-ins (Table): kubectl shows kube-apiserver's printer columns.
    import kubernetes
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a": "1"},
                                                  "binaryData": {"b": "Yg=="}})
    out = kubectl("get", "configmap", "c", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "DATA", "AGE"] and out[1].split()[:2] == ["c", "2"]
    kubernetes.client.CoordinationV1Api(api_client).create_namespaced_lease(namespace, {
        "metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}})
    out = kubectl("get", "lease", "l", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "HOLDER", "AGE"] and out[1].split()[:2] == ["l", "me"]
    core.create_namespaced_event(namespace, {
        "metadata": {"name": "e"}, "reason": "Tested", "message": "hello there", "type": "Warning",
        "involvedObject": {"kind": "Widget", "name": "w", "namespace": namespace}})
    out = kubectl("get", "events", "-n", namespace, "--field-selector", "reason=Tested").stdout.splitlines()
    assert out[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert out[1].split()[1:] == ["Warning", "Tested", "widget/w", "hello", "there"]
    kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(tag="1"))
    out = kubectl("get", "deployment", "web", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    cells = out[1].split()
    assert (cells[0], cells[1].endswith("/1"), cells[-3:]) == ("web", True, ["web", "nginx:1", "app=web"])
