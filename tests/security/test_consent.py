"""Red team: credentials by consent. A job author reaches no Secret (and no prompt ConfigMap) they could not
read themselves, and no Secret goes anywhere its owner did not mark it for.

The phantom attack of issue 13: a tenant who may only create AgentJobs names `credentialsSecret: payments-db`
(a database password, not theirs to see) and a repository URL on a server of theirs. Three lines hold:

- admission (charts/gigafactory/templates/consent.yaml, real kube-apiserver only: the embedded server has no
  authorizer): the job is refused unless its author may `get` that Secret / ConfigMap;
- the runner: a Secret not labelled `gigafactory.dev/credentials: "true"`, or whose
  `gigafactory.dev/allowed-hosts` does not name the URL's host, is never sent: the attempt ends Rejected;
- the operator's branch cleanup: the same check before it pushes a branch deletion with the job's Secret.

The attacker's server records every request it gets; the tests assert that it got none."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import ssl
import threading
import uuid
from typing import Any, Iterator

import kubernetes
import pytest

from gigafactory import kubeclient
from tests.chart.test_install import GROUP, VERSION, Identity, outcome, release  # noqa: F401 - fixture
from tests.conftest import wait_for
from tests.integration.operator import stubs
from tests.integration.runner.conftest import api, crds  # noqa: F401 - fixtures
from tests.integration.runner.test_runner import fleet  # noqa: F401 - fixture
from tests.unit.runner import gitserver

PASSWORD = "S3cr3t-DB-pass"
_forget_pods = stubs.forget_pods_after_test


# ----------------------------------------------------------------- the attacker's server


@dataclasses.dataclass
class Recorder:
    url: str
    ca: str
    requests: list[dict[str, str]]

    def carrying(self, secret: str) -> list[dict[str, str]]:
        """Requests that carry `secret` anywhere (a Basic Authorization header holds it base64-encoded)."""
        encoded = base64.b64encode(f"dbadmin:{secret}".encode()).decode()
        return [r for r in self.requests if any(secret in v or encoded in v for v in r.values())]


@contextlib.contextmanager
def attacker_server(*, tls: bool) -> Iterator[Recorder]:
    """A git-looking server on 127.0.0.1 that records every request and asks for credentials (401 with
    Basic), as a real host does, so a client holding any would send them on its next request."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _record(self) -> None:
            seen.append({"request": f"{self.command} {self.path}", **{k.lower(): v for k, v in self.headers.items()}})
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _record

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    cert, key = gitserver.certificate()
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(url=f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}/x.git", ca=cert, requests=seen)
    finally:
        server.shutdown()
        server.server_close()


def _secret(client: stubs.Api, namespace: str, name: str, *, labels: dict | None = None, hosts: str | None = None) -> None:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
    if hosts is not None:
        meta["annotations"] = {"gigafactory.dev/allowed-hosts": hosts}
    client.call("create", kubeclient.SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                                               "stringData": {"username": "dbadmin", "password": PASSWORD}}, namespace=namespace)


def _final(client: stubs.Api, namespace: str, name: str) -> dict:
    def done() -> dict | None:
        status = client.job(namespace, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None
    return wait_for(done, timeout=30, message=f"job {name} did not finish")


MARKED = {"gigafactory.dev/credentials": "true"}

# (https?, the Secret's labels, its allowed-hosts, the attempt's reason)
PHANTOMS = [
    pytest.param(True, {}, None, "SecretNotForGigafactory", id="unmarked-secret-over-https"),
    pytest.param(False, {}, None, "SecretNotForGigafactory", id="unmarked-secret-over-plain-http"),
    pytest.param(True, {"gigafactory.dev/credentials": "yes"}, "127.0.0.1", "SecretNotForGigafactory", id="label-not-true"),
    pytest.param(True, MARKED, None, "HostNotAllowed", id="marked-secret-naming-no-host"),
    pytest.param(True, MARKED, "github.com, git.example.com", "HostNotAllowed", id="marked-secret-for-other-hosts"),
    pytest.param(True, MARKED, "127.0.0.1.evil.example", "HostNotAllowed", id="host-suffix-is-not-the-host"),
]


# ----------------------------------------------------------------- the runner: both servers


@pytest.mark.parametrize("tls, labels, hosts, reason", PHANTOMS)
def test_the_runner_sends_a_secret_only_where_its_owner_allows(api, namespace, fleet, monkeypatch, tls, labels, hosts, reason) -> None:  # noqa: F811
    with attacker_server(tls=tls) as evil:
        monkeypatch.setenv("GIT_SSL_CAINFO", evil.ca)  # the runner would trust the attacker's certificate
        fleet()
        _secret(api, namespace, "payments-db", labels=labels, hosts=hosts)
        api.create_job(namespace, "phantom", repo={"url": evil.url, "credentialsSecret": "payments-db"})
        status = _final(api, namespace, "phantom")
        attempt = status["attempts"][-1]
        assert (status["phase"], attempt["outcome"], attempt["reason"]) == ("Failed", "Rejected", reason)
        assert attempt["message"].startswith("spec.repo.credentialsSecret: Secret payments-db ")
        if reason == "HostNotAllowed":
            assert "127.0.0.1" in attempt["message"]
        assert evil.requests == []  # nothing at all reached the server, least of all the password
        assert PASSWORD not in str(api.job(namespace, "phantom"))


def test_a_secret_marked_for_the_host_is_used(api, namespace, fleet, monkeypatch, tmp_path) -> None:  # noqa: F811
    """The consent is enough: the owner's label and host let the runner send it (the server then refuses the
    password, which is not its token, so the attempt fails on credentials, having really sent them)."""
    with attacker_server(tls=True) as host:
        monkeypatch.setenv("GIT_SSL_CAINFO", host.ca)
        fleet()
        _secret(api, namespace, "git-creds", labels=MARKED, hosts="github.com,127.0.0.1")
        api.create_job(namespace, "consented", repo={"url": host.url, "credentialsSecret": "git-creds"})
        attempt = _final(api, namespace, "consented")["attempts"][-1]
        assert (attempt["outcome"], attempt["reason"]) == ("Rejected", "BadCredentials")
        assert host.carrying(PASSWORD)


# ----------------------------------------------------------------- the operator's branch cleanup: both servers


def test_the_branch_cleanup_sends_an_unmarked_secret_nowhere(api, kubeconfig, namespace, tmp_path, monkeypatch) -> None:  # noqa: F811
    """A job whose report names a pushed branch, with `deleteBranch: Always`, naming an unmarked Secret and the
    attacker's URL: on deletion the operator would push the branch deletion with the Secret. It refuses, says
    so in a Warning Event that names the field, and the job still goes."""
    with attacker_server(tls=True) as evil:
        monkeypatch.setenv("GIT_SSL_CAINFO", evil.ca)
        _secret(api, namespace, "payments-db")
        runner = stubs.one_runner(api, namespace, "consent")
        with stubs.operators(kubeconfig, tmp_path):
            api.create_job(namespace, "phantom", repo={"url": evil.url, "credentialsSecret": "payments-db"},
                           cleanup={"deleteBranch": "Always"})
            lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
            runner.claim(lease)
            runner.report(namespace, "phantom", outcome="Succeeded",
                          result={"branch": "agent/phantom", "commit": "a" * 40, "summary": "done"})
            wait_for(lambda: (api.job(namespace, "phantom").get("status") or {}).get("phase") == "Succeeded",
                     timeout=15, message="the report folded in")
            api.call("delete", kubeclient.AGENTJOBS, "phantom", namespace=namespace)

            def gone() -> bool:
                try:
                    api.job(namespace, "phantom")
                    return False
                except kubeclient.NotFound:
                    return True
            wait_for(gone, timeout=20, message="the job deleted")
        events = [e for e in api.call("list", kubeclient.EVENTS, namespace=namespace)[0] if e.get("reason") == "BranchCleanupFailed"]
        assert events and "spec.repo.credentialsSecret: Secret payments-db is not marked for Gigafactory use" in events[0]["message"]
        assert evil.requests == []


# ----------------------------------------------------------------- admission: real kube-apiserver only


@dataclasses.dataclass
class Tenant:
    namespace: str
    who: Identity  # may create and get AgentJobs in its namespace, and get git-creds and the prompt ConfigMap
    editor: Identity  # may get and patch AgentJobs there, and read nothing


def _job(name: str, *, secret: str | None = None, prompt_from: str | None = None) -> dict:
    repo: dict[str, Any] = {"url": "https://git.example.com/acme/api.git"}
    if secret:
        repo["credentialsSecret"] = secret
    task = {"promptFrom": {"configMapKeyRef": {"name": prompt_from, "key": "prompt"}}} if prompt_from else {"prompt": "fix it"}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": name},
            "spec": {"repo": repo, "task": task, "agent": {"profile": "script"}}}


def _refusal(call: Any) -> str:
    """'allowed', or the message of the policy that refused the request."""
    try:
        call()
    except kubernetes.client.ApiException as e:
        body = e.body.decode() if isinstance(e.body, bytes) else str(e.body or "")
        assert "ValidatingAdmissionPolicy" in body, body
        return body
    return "allowed"


@pytest.fixture(scope="module")
def tenant(release, control_plane, api_client) -> Iterator[Tenant]:  # noqa: F811
    rel = release
    ns = rel.team_a
    rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    user, editor = f"tenant-{rel.suffix}", f"editor-{rel.suffix}"
    rules = {
        "tenant": [{"apiGroups": [GROUP], "resources": ["agentjobs"], "verbs": ["create", "get"]},
                   {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["git-creds"]},
                   {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["prompt"]}],
        "editor": [{"apiGroups": [GROUP], "resources": ["agentjobs"], "verbs": ["get", "patch"]}],
    }
    for role, subject in (("tenant", user), ("editor", editor)):
        rbac.create_namespaced_role(ns, {"metadata": {"name": role}, "rules": rules[role]})
        rbac.create_namespaced_role_binding(ns, {"metadata": {"name": role}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                                                        "kind": "Role", "name": role},
                                                 "subjects": [{"kind": "User", "name": subject, "apiGroup": "rbac.authorization.k8s.io"}]})
    for name in ("git-creds", "payments-db"):
        core.create_namespaced_secret(ns, {"metadata": {"name": name}, "stringData": {"password": PASSWORD}})
    for name in ("prompt", "someone-elses-prompt"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name}, "data": {"prompt": "x"}})
    clients = [kubernetes.config.new_client_from_config(config_file=control_plane.kubeconfig_for(u)) for u in (user, editor)]
    found = Tenant(ns, Identity(user, clients[0]), Identity(editor, clients[1]))
    # In force once the server has compiled it: probe with a request it must refuse, never a fixed sleep.
    probe = iter(range(1_000_000))
    wait_for(lambda: _refusal(lambda: found.who.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "agentjobs", _job(f"probe-{next(probe)}", secret="payments-db"))) != "allowed",
        timeout=60, interval=0.2, message="the consent policy to refuse")
    try:
        yield found
    finally:
        for client in clients:
            client.close()


def _create(tenant: Tenant, **kwargs: Any) -> str:
    name = f"job-{uuid.uuid4().hex[:6]}"
    return _refusal(lambda: tenant.who.custom.create_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "agentjobs",
                                                                              _job(name, **kwargs)))


@pytest.mark.real_only
def test_a_tenant_cannot_name_a_secret_it_cannot_read(tenant) -> None:
    refused = _create(tenant, secret="payments-db")
    assert "spec.repo.credentialsSecret" in refused and "may not get Secret payments-db" in refused
    # RBAC says the same on its own: the tenant cannot read it.
    assert outcome(lambda: tenant.who.core.read_namespaced_secret("payments-db", tenant.namespace)) == "rbac"


@pytest.mark.real_only
def test_a_tenant_cannot_read_its_prompt_from_a_configmap_it_cannot_read(tenant) -> None:
    refused = _create(tenant, prompt_from="someone-elses-prompt")
    assert "spec.task.promptFrom.configMapKeyRef.name" in refused and "may not get ConfigMap someone-elses-prompt" in refused


@pytest.mark.real_only
@pytest.mark.parametrize("kwargs", [pytest.param({}, id="no-secret"), pytest.param({"secret": "git-creds"}, id="its-own-secret"),
                                    pytest.param({"prompt_from": "prompt"}, id="its-own-prompt"),
                                    pytest.param({"secret": "git-creds", "prompt_from": "prompt"}, id="both")])
def test_a_tenant_names_what_it_may_read(tenant, kwargs) -> None:
    assert _create(tenant, **kwargs) == "allowed"


@pytest.mark.real_only
def test_an_update_may_not_swap_in_a_secret_its_author_cannot_read(release, tenant) -> None:  # noqa: F811
    """The editor may patch jobs but read no Secret: it cannot point a job at one; a change that leaves the
    reference as it was (a cancel) is not re-checked (consent was given when the reference was written)."""
    name = f"job-{uuid.uuid4().hex[:6]}"
    release.admin.custom.create_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "agentjobs", _job(name, secret="git-creds"))
    refused = _refusal(lambda: tenant.editor.patch_job(tenant.namespace, name, {"spec": {"repo": {"credentialsSecret": "payments-db"}}}))
    assert "spec.repo.credentialsSecret" in refused
    refused = _refusal(lambda: tenant.editor.patch_job(tenant.namespace, name, {"spec": {"task": {
        "prompt": None, "promptFrom": {"configMapKeyRef": {"name": "someone-elses-prompt", "key": "prompt"}}}}}))
    assert "spec.task.promptFrom" in refused
    assert _refusal(lambda: tenant.editor.patch_job(tenant.namespace, name, {"spec": {"cancel": True}})) == "allowed"
    assert release.admin.get_job(tenant.namespace, name)["spec"]["repo"]["credentialsSecret"] == "git-creds"
