"""kopf's login under `kopf run -m gigafactory.kopfmain`: our credentials, read afresh at every call
(kopf calls it at start, after a 401 and when `expiration` passes), and no process-wide KUBECONFIG."""
from __future__ import annotations

import datetime
import os

import pytest

from gigafactory import kopfmain
from tests.unit.test_kubeauth import Plugin, kubeconfig, rfc3339


class Recording(dict):
    """os.environ stand-in that remembers every change."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.changes: list[str] = []

    def __setitem__(self, key, value) -> None:
        self.changes.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.changes.append(key)
        super().__delitem__(key)


async def test_login_reads_the_token_file_afresh_and_leaves_kubeconfig_alone(tmp_path, monkeypatch) -> None:
    token = tmp_path / "token"
    token.write_text("sa-token-1")
    path = kubeconfig(tmp_path / "kubeconfig", {"tokenFile": str(token)}, **{"insecure-skip-tls-verify": True})
    environ = Recording(os.environ, GIGAFACTORY_KUBECONFIG=path, KUBECONFIG="/home/someone/.kube/production")
    monkeypatch.setattr(os, "environ", environ)
    info = await kopfmain.login()
    assert (info.server, info.scheme, info.token, info.insecure) == ("https://127.0.0.1:6443", "Bearer", "sa-token-1", True)
    token.write_text("sa-token-2")  # rotated: kopf's next login (after a 401) gets the new one
    assert (await kopfmain.login()).token == "sa-token-2"
    # Another thread reading KUBECONFIG meanwhile (kopf's own loaders, the kubernetes package) saw the
    # user's value throughout: nothing was written to the environment.
    assert environ.changes == [] and environ["KUBECONFIG"] == "/home/someone/.kube/production"


async def test_login_with_an_exec_plugin_expires_before_the_plugins_credential(tmp_path, monkeypatch) -> None:
    plugin = Plugin(tmp_path)
    expires = datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(minutes=15)
    plugin.expires.write_text(rfc3339(expires.timestamp()))
    monkeypatch.setenv("GIGAFACTORY_KUBECONFIG", kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}))
    info = await kopfmain.login()
    assert info.token == "t0ken-1" and plugin.count() == 1
    # kopf logs in again a minute before the plugin's token lapses, not after.
    assert info.expiration is not None
    assert datetime.timedelta(seconds=50) <= expires.replace(microsecond=0) - info.expiration <= datetime.timedelta(seconds=61)


@pytest.mark.parametrize("user", [{"token": "static"}, {"username": "u", "password": "p"}])
async def test_login_carries_fixed_credentials(tmp_path, monkeypatch, user) -> None:
    monkeypatch.setenv("GIGAFACTORY_KUBECONFIG", kubeconfig(tmp_path / "kubeconfig", user))
    info = await kopfmain.login()
    assert (info.token, info.username, info.password, info.expiration) == (
        user.get("token"), user.get("username"), user.get("password"), None)
