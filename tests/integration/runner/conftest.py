"""Fixtures of the runner's integration tests: the CRDs, a synchronous API, a real bare remote."""

import pathlib

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


_forget_pods = stubs.forget_pods_after_test  # a test's runner pods go with it


@pytest.fixture()
def remote(tmp_path) -> pathlib.Path:
    return gitrepos.make_remote(tmp_path)
