"""The embedded API server against kube-apiserver v1.28.7: the same request to both, the same answer.

Runs in the real pass only (it needs both servers): every bad manifest of tests/data/bad/ and a few
crafted ones (each kind of schema error beside a failing CEL rule, which decides whether kube-apiserver
still evaluates the rules) are created on the real server and on an embedded server of this module,
and the two Status answers must agree: code, reason, message and causes. The real server is the
reference; a difference here is a bug of the embedded server.
"""
import base64
import copy
import http.client
import json
import pathlib
import ssl

import kubernetes
import pytest
import yaml

import localcluster

ROOT = pathlib.Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.real_only


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> kubernetes.client.ApiClient:
    with localcluster.running(crd_dirs=[ROOT / "crds"]) as server:
        path = server.write_kubeconfig(tmp_path_factory.mktemp("embedded") / "kubeconfig")
        client = kubernetes.config.new_client_from_config(config_file=str(path))
        yield client
        client.close()


@pytest.fixture(scope="module", autouse=True)
def _crds(install_crds) -> None:
    install_crds(ROOT / "crds")


def _answer(client: kubernetes.client.ApiClient, doc: dict, namespace: str) -> tuple:
    custom = kubernetes.client.CustomObjectsApi(client)
    try:
        if doc["kind"] == "Factory":
            custom.create_cluster_custom_object("gigafactory.dev", "v1alpha1", "factories", doc, dry_run="All")
        else:
            custom.create_namespaced_custom_object("gigafactory.dev", "v1alpha1", namespace, "agentjobs", doc,
                                                   dry_run="All")
    except kubernetes.client.ApiException as error:
        body = json.loads(error.body)
        causes = sorted((c.get("field"), c.get("reason"), c.get("message"))
                        for c in (body.get("details") or {}).get("causes") or [])
        message = body.get("message") or ""
        # The message lists the causes in kube-apiserver's schema-walk order, which follows Go's map
        # iteration (random between sibling fields): compare its head and that it holds every cause.
        for field, _, text in causes:
            assert f"{field}: {text}" in message, (field, text, message)
        return error.status, body.get("reason"), message.split(" is invalid:")[0], causes
    return ("accepted",)


def _bad_manifests():
    for path in sorted((ROOT / "tests" / "data" / "bad").glob("*.yaml")):
        yield pytest.param(yaml.safe_load(path.read_text()), id=path.stem)


JOB = yaml.safe_load((ROOT / "examples" / "job.yaml").read_text())


def _job(**changes) -> dict:
    """examples/job.yaml with a failing CEL rule (backoff) and the given spec changes."""
    doc = copy.deepcopy(JOB)
    doc["spec"]["retry"] = {"backoff": {"initialSeconds": 100, "maxSeconds": 5}}
    for key, value in changes.items():
        target = doc["spec"]
        *parents, last = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(last)
        else:
            target[last] = value
    return doc


CRAFTED = [
    pytest.param(_job(), id="rule-alone"),
    pytest.param(_job(**{"cleanup.deleteBranch": "Sometimes"}), id="enum-beside-rule"),
    pytest.param(_job(repo=None), id="required-blocks-rules"),
    pytest.param(_job(**{"task.prompt": "x" * 262145}), id="too-long-blocks-rules"),
    pytest.param(_job(requirements={"capabilities": [f"c{i}" for i in range(100)]}), id="too-many-blocks-rules"),
    pytest.param(_job(priority="high"), id="type-blocks-rules"),
    pytest.param(_job(**{"repo.baseRef": "-x"}), id="pattern-beside-rules"),
    pytest.param(_job(priority=100000), id="maximum-beside-rule"),
]


@pytest.mark.parametrize("doc", [*_bad_manifests(), *CRAFTED])
def test_both_servers_refuse_alike(doc, api_client, embedded, namespace) -> None:
    real = _answer(api_client, doc, namespace)
    assert real[0] == 422, f"kube-apiserver accepted it: {real}"
    assert _answer(embedded, doc, "default") == real


# --- what the embedded server of `gigafactory dev` refuses (localcluster.guarding), against kube-apiserver ---

WIDGETS = ROOT / "tests" / "conformance" / "data" / "widgets.yaml"


class Raw:
    """Raw HTTPS requests to the server of a kubeconfig, with its token (or another)."""

    def __init__(self, path: str) -> None:
        config = yaml.safe_load(pathlib.Path(path).read_text())
        cluster = config["clusters"][0]["cluster"]
        self.host, self.port = cluster["server"].split("//")[1].rsplit(":", 1)
        self.token = config["users"][0]["user"]["token"]
        self.tls = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())

    def __call__(self, method: str, path: str, body: str | None = None, content_type: str | None = "application/json",
                 token: str | None = "") -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.token if token == '' else token}"}
        if content_type is not None and body is not None:
            headers["Content-Type"] = content_type
        connection = http.client.HTTPSConnection(self.host, int(self.port), context=self.tls, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()


@pytest.fixture(scope="module")
def raw_pair(tmp_path_factory, kubeconfig, install_crds) -> tuple[Raw, Raw]:
    """kube-apiserver and an embedded server as `gigafactory dev` starts it (a token, TLS), both serving widgets."""
    install_crds(WIDGETS)
    with localcluster.running(crd_dirs=[ROOT / "crds", WIDGETS.parent], token=localcluster.new_token()) as server:
        path = server.write_kubeconfig(tmp_path_factory.mktemp("embedded-dev") / "kubeconfig")
        yield Raw(kubeconfig), Raw(str(path))


def _widget(name: str, blob: int) -> str:
    return json.dumps({"apiVersion": "conformance.gigafactory.dev/v1", "kind": "Widget", "metadata": {"name": name},
                       "spec": {"size": 1, "minReplicas": 0, "maxReplicas": 1, "extra": {"blob": "x" * blob}}})


def _configmap(name: str, size: int) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "x" * size}})


DEEP = '{"metadata":{"name":"deep"},"data":' + "[" * 10_001 + "]" * 10_001 + "}"
GUARDED = [
    # (id, method, path in {ns}, body, content type, token, compare the message too)
    ("wrong-token", "GET", "/api/v1/namespaces/{ns}/configmaps", None, None, "not-the-token", True),
    ("create-text-plain", "POST", "/api/v1/namespaces/{ns}/configmaps?dryRun=All", _configmap("a", 1), "text/plain", "", True),
    ("create-form", "POST", "/api/v1/namespaces/{ns}/configmaps?dryRun=All", _configmap("a", 1),
     "application/x-www-form-urlencoded", "", True),
    ("update-text-plain", "PUT", "/api/v1/namespaces/{ns}/configmaps/a", _configmap("a", 1), "text/plain", "", True),
    ("delete-body-text-plain", "DELETE", "/api/v1/namespaces/{ns}/configmaps/a", '{"propagationPolicy":"Background"}',
     "text/plain", "", True),
    ("patch-builtin-text-plain", "PATCH", "/api/v1/namespaces/{ns}/configmaps/a", "{}", "text/plain", "", True),
    ("patch-custom-text-plain", "PATCH", "/apis/conformance.gigafactory.dev/v1/namespaces/{ns}/widgets/a", "{}",
     "text/plain", "", True),
    ("create-no-content-type", "POST", "/api/v1/namespaces/{ns}/configmaps?dryRun=All", _configmap("a", 1), None, "", False),
    ("request-4mib", "POST", "/api/v1/namespaces/{ns}/configmaps?dryRun=All", _configmap("a", 4 * 1024 * 1024),
     "application/json", "", True),
    ("configmap-over-1mib", "POST", "/api/v1/namespaces/{ns}/configmaps", _configmap("a", 1024 * 1024 + 1),
     "application/json", "", True),
    ("object-under-etcd-limit", "POST", "/apis/conformance.gigafactory.dev/v1/namespaces/{ns}/widgets",
     _widget("small", 1_400_000), "application/json", "", False),
    ("object-over-etcd-limit", "POST", "/apis/conformance.gigafactory.dev/v1/namespaces/{ns}/widgets",
     _widget("large", 2_000_000), "application/json", "", True),
    ("json-10001-deep", "POST", "/api/v1/namespaces/{ns}/configmaps", DEEP, "application/json", "", False),
    ("yaml-10001-deep", "POST", "/api/v1/namespaces/{ns}/configmaps", DEEP, "application/yaml", "", False),
]


@pytest.mark.parametrize("method, path, body, content_type, token, message",
                         [pytest.param(*case[1:], id=case[0]) for case in GUARDED])
def test_both_servers_guard_alike(raw_pair, namespace, method, path, body, content_type, token, message) -> None:
    """Code and reason always; the message too where it is kube-apiserver's own words. (Nesting: both
    400 BadRequest at 10,001 levels; the embedded server stops at guarding.MAX_DEPTH, far earlier.)"""
    real, embedded = raw_pair
    embedded("POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": namespace}}))
    answers = []
    for server in (real, embedded):
        code, status = server(method, path.format(ns=namespace), body, content_type, token)
        answers.append((code, status.get("reason") if code >= 400 else "accepted",
                        status.get("message") if message and code >= 400 else None))
    assert answers[1] == answers[0]
