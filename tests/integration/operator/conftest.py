"""Fixtures of the operator's integration tests: the CRDs once per module, a synchronous API."""

import pytest

from tests.integration.operator import stubs


@pytest.fixture(scope="module", autouse=True)
def crds(install_crds) -> None:
    install_crds(stubs.ROOT / "crds")


@pytest.fixture()
def api(kubeconfig) -> stubs.Api:
    return stubs.Api(kubeconfig)


_forget_pods = stubs.forget_pods_after_test  # a test's runner pods go with it
