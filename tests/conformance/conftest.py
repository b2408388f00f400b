"""Conformance fixtures: the suite's own CRD, helpers for raw HTTP, and the no-500 guard."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterator

import kubernetes
import pytest

DATA = pathlib.Path(__file__).parent / "data"
GROUP, VERSION, PLURAL = "conformance.gigafactory.dev", "v1", "widgets"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if pathlib.Path(str(item.fspath)).is_relative_to(pathlib.Path(__file__).parent):
            item.add_marker(pytest.mark.conformance)


@pytest.fixture(scope="session", autouse=True)
def widget_crd(install_crds: Callable[..., None]) -> None:
    install_crds(DATA / "widgets.yaml")


@pytest.fixture(autouse=True)
def no_internal_errors(local_cluster: Any) -> Iterator[None]:
    """The embedded server must never answer 500, whatever a test sends it."""
    before = local_cluster.local.server.internal_errors if local_cluster else 0
    yield
    if local_cluster:
        assert local_cluster.local.server.internal_errors == before, "the embedded server answered 500"


@pytest.fixture()
def custom(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


@pytest.fixture()
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1, **spec}}


class Raw:
    """Raw HTTP through the official client's transport (auth and TLS from the kubeconfig)."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client
        self.host = client.configuration.host

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                headers: dict[str, str] | None = None, raw: bytes | None = None,
                preload: bool = True) -> Any:
        all_headers = {"Accept": "application/json", **(headers or {})}
        # auth_settings() is where the client keeps the token, whatever its version calls the key
        # (kubernetes >= 33: api_key["BearerToken"]); a client certificate travels in the TLS layer.
        for setting in self.client.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                all_headers[setting["key"]] = setting["value"]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            all_headers["Content-Type"] = content_type
        return self.client.rest_client.pool_manager.request(method, self.host + path, body=data, headers=all_headers,
                                                            preload_content=preload, timeout=30)

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        response = self.request(method, path, body, **kw)
        return response.status, json.loads(response.data or b"null")


@pytest.fixture()
def raw(api_client: kubernetes.client.ApiClient) -> Raw:
    return Raw(api_client)


def widgets_path(namespace: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}" + (f"/{name}" if name else "")
