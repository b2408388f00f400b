"""The embedded API server against kube-apiserver v1.28.7: the same request to both, the same answer.

Runs in the real pass only (it needs both servers): every bad manifest of tests/data/bad/ and a few
crafted ones (each kind of schema error beside a failing CEL rule, which decides whether kube-apiserver
still evaluates the rules) are created on the real server and on an embedded server of this module,
and the two Status answers must agree: code, reason, message and causes. The real server is the
reference; a difference here is a bug of the embedded server.
"""
import copy
import json
import pathlib

import kubernetes
import pytest
import yaml

from gigafactory import localcluster

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
