"""Fixtures of the runner's integration tests: the CRDs, a synchronous API, a real bare remote."""

import pathlib
from collections.abc import Iterator

import pytest

from tests import gitrepos
from tests.integration.operator import stubs

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", autouse=True)
def crds(install_crds) -> None:
    install_crds(ROOT / "crds")


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


@pytest.fixture()
def remote(tmp_path) -> pathlib.Path:
    return gitrepos.make_remote(tmp_path)
