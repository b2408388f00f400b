"""A real kopf operator drives a widget through create → finalizer → status → blocked delete → gone."""
from __future__ import annotations

import pathlib

import kopf
import kopf.testing
import kubernetes
import pytest
import yaml

from tests.conftest import wait_for
from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget


def _login(kubeconfig: str):
    # Credentials from the explicit kubeconfig only (kopf's own login would read KUBECONFIG).
    def login(**_):
        configuration = kubernetes.config.new_client_from_config(config_file=kubeconfig).configuration
        # The token is wherever auth_settings() says (kubernetes >= 33 keeps it under
        # api_key["BearerToken"], older versions under "authorization"); a client certificate is in
        # cert_file/key_file. Either must reach kopf, or it talks to the server anonymously.
        token = ""
        for setting in configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("key", "").lower() == "authorization":
                token = setting.get("value") or ""
        scheme, _, credential = token.partition(" ")
        assert credential or configuration.cert_file, "the kubeconfig has neither a token nor a client certificate"
        return kopf.ConnectionInfo(
            server=configuration.host, token=credential or None, scheme=scheme if credential else None,
            ca_path=configuration.ssl_ca_cert, certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file, insecure=not configuration.verify_ssl,
            default_namespace="default")
    return login


@pytest.mark.timeout(90)
def test_kopf_operator_lifecycle(kubeconfig, custom, namespace):
    registry = kopf.OperatorRegistry()
    deleted = []

    @kopf.on.login(registry=registry)
    def login(**kwargs):
        return _login(kubeconfig)(**kwargs)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="created")
    def created(spec, **_):
        return {"size": spec["size"]}

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="phase")
    def phase(patch, **_):
        patch.status["phase"] = "Ready"

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(name, **_):
        deleted.append(name)

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.posting.enabled = True
    args = ["run", "--standalone", "--namespace", namespace]
    with kopf.testing.KopfRunner(args, registry=registry, settings=settings, timeout=60) as runner:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))

        def get():
            return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")

        obj = wait_for(lambda: (o := get()) and o["metadata"].get("finalizers") and o.get("status", {}).get("phase")
                       == "Ready" and o, timeout=30, message="finalizer and status from the operator")
        assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert obj["status"]["created"] == {"size": 1}
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")

        def gone():
            try:
                get()
            except kubernetes.client.ApiException as e:
                return e.status == 404
            return False
        wait_for(gone, timeout=30, message="the operator to release the finalizer")
        assert deleted == ["w"]
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None


@pytest.mark.parametrize("user", [
    pytest.param({"token": "t0ken"}, id="token"),
    pytest.param({"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}, id="client-certificate"),
])
def test_kopf_login_carries_the_kubeconfig_credentials(tmp_path, user):
    # Against kube-apiserver a login without the credentials is anonymous (403 on everything): both
    # kinds a kubeconfig may hold must reach kopf. No server needed (client certificates need https).
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                                     "insecure-skip-tls-verify": True}}],
              "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    info = _login(str(path))()
    if "token" in user:
        assert (info.scheme, info.token) == ("Bearer", "t0ken")
    else:
        assert info.token is None
        assert pathlib.Path(info.certificate_path).read_bytes() == b"CERT"
        assert pathlib.Path(info.private_key_path).read_bytes() == b"KEY"
