"""Fixtures of the operator's integration tests: the CRDs once per module, a synchronous API."""

from collections.abc import Iterator

import pytest

from tests.integration.operator import stubs


@pytest.fixture(scope="module", autouse=True)
def crds(install_crds) -> None:
    install_crds(stubs.ROOT / "crds")


@pytest.fixture()
def api(kubeconfig) -> stubs.Api:
    return stubs.Api(kubeconfig)


@pytest.fixture(autouse=True)
def _forget_pods(request) -> Iterator[None]:
    """A test's runner pods go with it (stubs.forget_pods), before its namespace does."""
    if "namespace" not in request.fixturenames:
        yield
        return
    api, namespace = stubs.Api(request.getfixturevalue("kubeconfig")), request.getfixturevalue("namespace")
    yield
    stubs.forget_pods(api, namespace)
