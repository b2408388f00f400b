"""Credentials that refresh (gigafactory.kubeauth): the exec plugin protocol, token file rotation,
certificate files, one refresh for many requests. No API server here (tests/integration/api/
test_credentials_refresh.py sends requests); the clock is kubeauth's `time`, replaced where it matters."""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest
import yaml

from gigafactory import kubeauth, kubeconfigs


class Clock:
    """Stands in for the `time` module inside kubeauth: tests move it forward instead of sleeping."""

    def __init__(self) -> None:
        self.mono, self.wall = 1000.0, 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(kubeauth, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=fake.time))
    return fake


def rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Plugin:
    """A credential plugin the test writes: prints an ExecCredential with the token in `token`, the
    expiry in `expires` (if any), and appends its KUBERNETES_EXEC_INFO and environment to `runs`."""

    def __init__(self, directory: pathlib.Path, api_version: str = "client.authentication.k8s.io/v1") -> None:
        self.dir = directory
        self.path = directory / "plugin.py"
        self.token = directory / "token"
        self.expires = directory / "expires"
        self.runs = directory / "runs"
        self.answer = directory / "answer"  # when present: printed verbatim instead
        self.api_version = api_version
        self.token.write_text("t0ken-1")
        self.path.write_text(f"""#!{sys.executable}
import json, os, pathlib, sys
d = pathlib.Path({str(directory)!r})
with open(d / "runs", "a") as f:
    f.write(json.dumps({{"info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]), "extra": os.environ.get("EXTRA"), "argv": sys.argv[1:]}}) + "\\n")
if (d / "fail").exists():
    sys.stderr.write("login expired, run `cloud auth login`\\n")
    sys.exit(3)
if (d / "answer").exists():
    print((d / "answer").read_text())
    sys.exit(0)
status = {{"token": (d / "token").read_text()}}
if (d / "expires").exists():
    status["expirationTimestamp"] = (d / "expires").read_text()
print(json.dumps({{"apiVersion": {api_version!r}, "kind": "ExecCredential", "status": status}}))
""")
        self.path.chmod(0o755)

    def count(self) -> int:
        return len(self.runs.read_text().splitlines()) if self.runs.exists() else 0

    def last(self) -> dict:
        return json.loads(self.runs.read_text().splitlines()[-1])

    def spec(self, **extra) -> dict:
        spec = {"apiVersion": self.api_version, "command": str(self.path), "args": ["--flag"],
                "env": [{"name": "EXTRA", "value": "from-kubeconfig"}], "interactiveMode": "Never"}
        spec.update(extra)
        return spec


def kubeconfig(path: pathlib.Path, user: dict, *, server: str = "https://127.0.0.1:6443", **cluster) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
async def test_exec_plugin_speaks_the_exec_credential_protocol(tmp_path, api_version) -> None:
    plugin = Plugin(tmp_path, api_version)
    ca = _certificate(tmp_path, "ca")[0].read_bytes()
    path = kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec(provideClusterInfo=True)},
                      **{"certificate-authority-data": base64.b64encode(ca).decode(),
                         "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}}]})
    credentials = kubeconfigs.from_kubeconfig(path)
    assert plugin.count() == 0  # loading a kubeconfig runs nothing: the first request does
    auth = await credentials.current()
    assert auth.headers == {"Authorization": "Bearer t0ken-1"}
    run = plugin.last()
    assert run["info"] == {"apiVersion": api_version, "kind": "ExecCredential", "spec": {
        "interactive": False,
        "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": base64.b64encode(ca).decode(),
                    "config": {"audience": "x"}}}}
    assert run["extra"] == "from-kubeconfig" and run["argv"] == ["--flag"]


async def test_many_requests_at_start_run_the_plugin_once(tmp_path) -> None:
    plugin = Plugin(tmp_path)
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    auths = await asyncio.gather(*(credentials.current() for _ in range(50)))
    assert {a.headers["Authorization"] for a in auths} == {"Bearer t0ken-1"}
    assert plugin.count() == 1


async def test_exec_credential_is_renewed_before_it_expires(tmp_path, clock) -> None:
    plugin = Plugin(tmp_path)
    plugin.expires.write_text(rfc3339(clock.wall + 900))  # a 15-minute cloud token
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    first = await credentials.current()
    assert first.material.expires == pytest.approx(clock.wall + 900)
    clock.advance(800)
    assert (await credentials.current()) is first and plugin.count() == 1  # 100 s left: still good
    plugin.token.write_text("t0ken-2")
    plugin.expires.write_text(rfc3339(clock.wall + 1800))
    clock.advance(50)  # 50 s left, within the minute's margin: renewed before it lapses, not after
    renewed = await credentials.current()
    assert renewed.headers["Authorization"] == "Bearer t0ken-2" and renewed.generation > first.generation
    assert plugin.count() == 2


async def test_a_401_reruns_the_plugin_once_for_all_requests_that_failed_alike(tmp_path) -> None:
    plugin = Plugin(tmp_path)
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    used = await credentials.current()
    plugin.token.write_text("t0ken-2")  # revoked and reissued behind our back
    answers = await asyncio.gather(*(credentials.rejected(used) for _ in range(20)))
    assert answers == [True] * 20  # each may retry ...
    assert plugin.count() == 2  # ... after one run
    assert (await credentials.current()).headers["Authorization"] == "Bearer t0ken-2"
    # A 401 for the new token with nothing newer to get: no retry (the same token again would fail again).
    assert await credentials.rejected(await credentials.current()) is False
    assert plugin.count() == 3


@pytest.mark.parametrize("setup, message", [
    pytest.param(lambda p: (p.dir / "fail").touch(), "exited with 3: login expired, run `cloud auth login`", id="exit-code"),
    pytest.param(lambda p: p.answer.write_text("not json"), "not JSON", id="not-json"),
    pytest.param(lambda p: p.answer.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                                                           "status": {"token": "x"}})), "the kubeconfig asked for", id="other-version"),
    pytest.param(lambda p: p.answer.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"})),
                 "has no status", id="no-status"),
    pytest.param(lambda p: p.answer.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                                                           "status": {"clientCertificateData": "C"}})), "come together", id="cert-without-key"),
    pytest.param(lambda p: p.answer.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                                                           "status": {}})), "neither a token", id="empty-status"),
    pytest.param(lambda p: p.answer.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                                                           "status": {"token": "x", "expirationTimestamp": "soon"}})), "RFC 3339", id="bad-expiry"),
])
async def test_a_plugin_that_fails_says_why(tmp_path, setup, message) -> None:
    plugin = Plugin(tmp_path)
    setup(plugin)
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    with pytest.raises(kubeauth.CredentialsError, match="exec plugin .*plugin.py") as info:
        await credentials.current()
    assert message in str(info.value)


async def test_a_missing_plugin_names_its_install_hint(tmp_path) -> None:
    spec = {"apiVersion": "client.authentication.k8s.io/v1", "command": "no-such-plugin-gf", "interactiveMode": "Never",
            "installHint": "install it with: brew install no-such-plugin"}
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": spec}))
    with pytest.raises(kubeauth.CredentialsError, match="brew install no-such-plugin"):
        await credentials.current()


async def test_a_failing_plugin_is_not_run_for_every_queued_request(tmp_path) -> None:
    plugin = Plugin(tmp_path)
    (plugin.dir / "fail").touch()
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    results = await asyncio.gather(*(credentials.current() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, kubeauth.CredentialsError) for r in results)
    assert plugin.count() == 1


async def test_a_failed_renewal_keeps_a_credential_that_has_not_expired(tmp_path, clock) -> None:
    plugin = Plugin(tmp_path)
    plugin.expires.write_text(rfc3339(clock.wall + 600))
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    first = await credentials.current()
    (plugin.dir / "fail").touch()
    clock.advance(590)  # due for renewal; the plugin fails; the token still has 10 s
    assert (await credentials.current()).headers == first.headers
    clock.advance(20)  # now it has lapsed: the failure is the caller's
    with pytest.raises(kubeauth.CredentialsError):
        await credentials.current()


def test_relative_plugin_paths_are_relative_to_the_kubeconfig(tmp_path) -> None:
    (tmp_path / "bin").mkdir()
    spec = {"apiVersion": "client.authentication.k8s.io/v1", "command": "bin/login", "interactiveMode": "Never"}
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": spec}))
    assert credentials.sources[0].argv[0] == str(tmp_path.resolve() / "bin" / "login")
    spec["command"] = "gke-gcloud-auth-plugin"  # no separator: found on PATH
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": spec}))
    assert credentials.sources[0].argv[0] == "gke-gcloud-auth-plugin"


@pytest.mark.parametrize("spec, message", [
    pytest.param({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}, "not supported", id="v1alpha1"),
    pytest.param({"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}, "interactiveMode", id="v1-needs-mode"),
    pytest.param({"apiVersion": "client.authentication.k8s.io/v1", "command": "x", "interactiveMode": "Always"}, "needs a terminal",
                 id="always-interactive"),
    pytest.param({"apiVersion": "client.authentication.k8s.io/v1"}, "no command", id="no-command"),
])
def test_exec_sections_a_controller_cannot_use_are_refused_at_load(tmp_path, spec, message) -> None:
    with pytest.raises(kubeauth.ConfigError, match=message):
        kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": spec}))


async def test_a_token_file_is_reread_each_minute_and_after_a_401(tmp_path, clock) -> None:
    token = tmp_path / "token"
    token.write_text("sa-token-1\n")
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"tokenFile": "token"}))
    first = await credentials.current()
    assert first.headers == {"Authorization": "Bearer sa-token-1"}
    token.write_text("sa-token-2")  # the kubelet rotated it
    clock.advance(30)
    assert (await credentials.current()) is first  # read at most once a minute ...
    clock.advance(31)
    assert (await credentials.current()).headers == {"Authorization": "Bearer sa-token-2"}  # ... and then again
    token.write_text("sa-token-3")  # the old one revoked: a 401 reads the file at once
    assert await credentials.rejected(await credentials.current()) is True
    assert (await credentials.current()).headers == {"Authorization": "Bearer sa-token-3"}
    # Unchanged file: nothing new to try.
    assert await credentials.rejected(await credentials.current()) is False


async def test_a_token_file_that_vanishes_keeps_the_token_until_a_401(tmp_path, clock) -> None:
    token = tmp_path / "token"
    token.write_text("sa-token-1")
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"tokenFile": str(token)}))
    used = await credentials.current()
    token.unlink()
    clock.advance(61)
    assert (await credentials.current()).headers == used.headers  # as client-go: keep the cached token
    with pytest.raises(kubeauth.CredentialsError, match="cannot read the token file"):
        await credentials.rejected(used)


async def test_in_cluster_reads_the_projected_token_as_the_kubelet_rotates_it(tmp_path, clock) -> None:
    (tmp_path / "token").write_text("projected-1")
    credentials = kubeconfigs.in_cluster(directory=tmp_path, environ={"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert credentials.server == "https://[fd00::1]:443"
    assert (await credentials.current()).headers == {"Authorization": "Bearer projected-1"}
    (tmp_path / "token").write_text("projected-2")
    clock.advance(61)
    assert (await credentials.current()).headers == {"Authorization": "Bearer projected-2"}
    with pytest.raises(kubeauth.ConfigError, match="not in a cluster"):
        kubeconfigs.in_cluster(directory=tmp_path, environ={})


def _certificate(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
                    "-subj", f"/CN={name}", "-days", "1"], cwd=directory, check=True, capture_output=True, timeout=60)
    return directory / f"{name}.crt", directory / f"{name}.key"


async def test_client_certificate_files_are_reloaded_when_renewed(tmp_path, clock) -> None:
    cert, key = _certificate(tmp_path, "one")
    path = kubeconfig(tmp_path / "kubeconfig", {"client-certificate": "one.crt", "client-key": "one.key"},
                      **{"insecure-skip-tls-verify": True})
    credentials = kubeconfigs.from_kubeconfig(path)
    first = await credentials.current()
    assert first.material.cert == (cert.read_bytes(), key.read_bytes()) and first.ssl is not False
    clock.advance(61)
    assert (await credentials.current()) is first  # unchanged files: same context, same connections
    new_cert, new_key = _certificate(tmp_path, "two")
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    clock.advance(61)
    renewed = await credentials.current()
    assert renewed.material.cert == (cert.read_bytes(), key.read_bytes())
    assert renewed.ssl is not first.ssl  # a new TLS context: new connections present the new certificate


async def test_an_exec_plugin_may_answer_a_client_certificate(tmp_path) -> None:
    cert, key = _certificate(tmp_path, "exec")
    plugin = Plugin(tmp_path)
    plugin.answer.write_text(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                                         "status": {"clientCertificateData": cert.read_text(), "clientKeyData": key.read_text()}}))
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    auth = await credentials.current()
    assert auth.headers == {} and auth.material.cert == (cert.read_bytes(), key.read_bytes())


@pytest.mark.parametrize("user, header", [
    pytest.param({"token": "static"}, "Bearer static", id="token"),
    pytest.param({"username": "admin", "password": "pw"}, "Basic " + base64.b64encode(b"admin:pw").decode(), id="basic"),
    pytest.param({}, None, id="anonymous"),
])
async def test_fixed_credentials_are_never_reread(tmp_path, user, header) -> None:
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", user))
    auth = await credentials.current()
    assert auth.headers.get("Authorization") == header
    assert await credentials.rejected(auth) is False  # a 401 for a written-in token is final


def test_kubeconfig_mistakes_are_config_errors(tmp_path) -> None:
    with pytest.raises(kubeauth.ConfigError, match="cannot read"):
        kubeconfigs.from_kubeconfig(tmp_path / "missing")
    path = kubeconfig(tmp_path / "kubeconfig", {"token": "t"})
    with pytest.raises(kubeauth.ConfigError, match="no context named 'other'"):
        kubeconfigs.from_kubeconfig(path, context="other")
    with pytest.raises(kubeauth.ConfigError, match="come together"):
        kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "k2", {"client-certificate-data": "QQ=="}))
    with pytest.raises(kubeauth.ConfigError, match="certificate authority .* cannot be used"):
        kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "k3", {}, **{"certificate-authority-data": base64.b64encode(b"CA PEM").decode()}))


async def test_a_legacy_auth_provider_goes_through_the_kubernetes_loader(tmp_path) -> None:
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    id_token = ".".join([b64({"alg": "RS256"}), b64({"exp": 4102444800, "iss": "https://issuer"}), "c2ln"])
    provider = {"name": "oidc", "config": {"client-id": "x", "id-token": id_token, "idp-issuer-url": "https://issuer"}}
    credentials = kubeconfigs.from_kubeconfig(kubeconfig(tmp_path / "kubeconfig", {"auth-provider": provider}))
    auth = await credentials.current()
    assert auth.headers == {"Authorization": f"Bearer {id_token}"}
    assert credentials.sources[0].refreshable  # after a 401 the loader runs again (and renews what expired)
