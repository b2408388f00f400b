"""Reading a kubeconfig file, or a pod's ServiceAccount, into `kubeauth.Credentials`: which server,
how to trust it, and which sources the credentials come from (kubeauth keeps those current).

Only the file named is read: never $KUBECONFIG, never ~/.kube/config, so nothing here can pick up a
user's production cluster by accident. The kubeconfig keys are kubectl's; relative paths are
relative to the file, as kubectl resolves them.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import yaml

from gigafactory import kubeauth

SERVICE_ACCOUNT_DIR = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _resolve(base: pathlib.Path, path: str) -> str:
    return path if os.path.isabs(path) else str(base / path)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except ValueError:
        raise kubeauth.ConfigError(f"{what} is not base64") from None


def from_kubeconfig(path: str | os.PathLike[str], *, context: str | None = None) -> kubeauth.Credentials:
    """Credentials from one kubeconfig file (never $KUBECONFIG, never ~/.kube/config), per its
    current context or `context`. Relative paths are relative to the file, as for kubectl."""
    file = pathlib.Path(path)
    try:
        config = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise kubeauth.ConfigError(f"cannot read kubeconfig {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise kubeauth.ConfigError(f"kubeconfig {file} is not YAML: {exc}") from None
    if not isinstance(config, dict):
        raise kubeauth.ConfigError(f"kubeconfig {file} is not a kubeconfig")
    base = file.resolve().parent

    def named(kind: str, name: str | None) -> dict[str, Any]:
        for entry in config.get(kind) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return dict(entry.get(kind[:-1]) or {})
        raise kubeauth.ConfigError(f"kubeconfig {file}: no {kind[:-1]} named {name!r}")

    if not (context or config.get("current-context")):
        raise kubeauth.ConfigError(f"kubeconfig {file} has no current-context (and none was named)")
    ctx = named("contexts", context or config.get("current-context"))
    cluster = named("clusters", ctx.get("cluster"))
    user = named("users", ctx.get("user")) if ctx.get("user") else {}
    server = str(cluster.get("server") or "")
    if not server:
        raise kubeauth.ConfigError(f"kubeconfig {file}: cluster {ctx.get('cluster')!r} has no server")
    ca_data = _b64(cluster["certificate-authority-data"], "certificate-authority-data") if cluster.get("certificate-authority-data") else None
    ca_file = _resolve(base, cluster["certificate-authority"]) if cluster.get("certificate-authority") and not ca_data else None
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    sources: list[kubeauth.Source] = []
    if user.get("exec"):
        info = {"server": server, "tls-server-name": cluster.get("tls-server-name") or None,
                "insecure-skip-tls-verify": insecure or None,
                "certificate-authority-data": base64.b64encode(ca_data).decode() if ca_data else None,
                "proxy-url": cluster.get("proxy-url") or None}
        for extension in cluster.get("extensions") or []:
            if isinstance(extension, dict) and extension.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = extension.get("extension")
        sources.append(kubeauth.ExecPlugin(user["exec"], base_dir=base, cluster={k: v for k, v in info.items() if v is not None}))
    elif user.get("auth-provider"):
        sources.append(kubeauth.LegacyProvider(str(file), context))
    elif user.get("tokenFile"):
        sources.append(kubeauth.TokenFile(_resolve(base, str(user["tokenFile"])), fallback=user.get("token") or None))
    elif user.get("token"):
        sources.append(kubeauth.Fixed(kubeauth.Material(token=str(user["token"]))))
    elif user.get("username"):
        sources.append(kubeauth.Fixed(kubeauth.Material(basic=(str(user["username"]), str(user.get("password") or "")))))
    if user.get("client-certificate-data") or user.get("client-key-data"):
        if not (user.get("client-certificate-data") and user.get("client-key-data")):
            raise kubeauth.ConfigError(f"kubeconfig {file}: client-certificate-data and client-key-data come together")
        sources.append(kubeauth.Fixed(kubeauth.Material(cert=(_b64(user["client-certificate-data"], "client-certificate-data"),
                                            _b64(user["client-key-data"], "client-key-data")))))
    elif user.get("client-certificate") or user.get("client-key"):
        if not (user.get("client-certificate") and user.get("client-key")):
            raise kubeauth.ConfigError(f"kubeconfig {file}: client-certificate and client-key come together")
        sources.append(kubeauth.CertFiles(_resolve(base, user["client-certificate"]), _resolve(base, user["client-key"])))
    return kubeauth.Credentials(server, ca_data=ca_data, ca_file=ca_file, insecure=insecure,
                       tls_server_name=cluster.get("tls-server-name"), sources=sources)


def in_cluster(*, directory: pathlib.Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None) -> kubeauth.Credentials:
    """The pod's ServiceAccount: the API server from KUBERNETES_SERVICE_HOST/PORT, the projected token
    (re-read as the kubelet rotates it) and CA from `directory`."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise kubeauth.ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset (give a kubeconfig)")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    token = directory / "token"
    if not token.is_file():
        raise kubeauth.ConfigError(f"no ServiceAccount token at {token} (is automountServiceAccountToken off?)")
    ca = directory / "ca.crt"
    return kubeauth.Credentials(f"https://{host}:{port}", ca_file=str(ca) if ca.is_file() else None, sources=[kubeauth.TokenFile(token)])


def load(kubeconfig: str | os.PathLike[str] | None = None, *, context: str | None = None) -> kubeauth.Credentials:
    """From an explicit kubeconfig file, or the in-cluster ServiceAccount when None."""
    return in_cluster() if kubeconfig is None else from_kubeconfig(kubeconfig, context=context)
