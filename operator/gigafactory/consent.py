"""Credentials by consent and log references a reader may trust: pure checks, no I/O.

A job names a Secret (`spec.repo.credentialsSecret`); admission has checked that its author may
`get` it (charts/gigafactory/templates/consent.yaml). Whoever is about to send what the Secret holds
over the network (the runner, the operator's branch cleanup) checks here, before any connection,
that the Secret's owner consented: it is labelled `gigafactory.dev/credentials: "true"` and its
annotation `gigafactory.dev/allowed-hosts` names the host of the job's URL. An unlabelled database
password named by a job is therefore never sent anywhere, whatever URL the job gives.

A log reference (`status.report.logRef`, `attempts[].logRef`) is written by a runner: a reader
accepts the ConfigMap it names only when the name and labels bind it to the attempt's pod and to
the job (docs/security.md, "Runner policies").
"""

import base64
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from gigafactory import constants
from gigafactory.models import objects

FIELD = "spec.repo.credentialsSecret"

# scp-like user@host:path (what git reads as ssh).
_SCP = re.compile(r"^[A-Za-z0-9._-]+@(?P<host>[^:/]+):")


class Refused(Exception):
    """A Secret that may not be used for this URL; `reason` is the attempt's CamelCase reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def url_host(url: str) -> str | None:
    """The host a git URL connects to, lower-case; None for a local repository (a path, file://)."""
    if url.startswith("/") or url.startswith("file://"):
        return None
    scp = _SCP.match(url)
    if scp is not None and "://" not in url.split("@", 1)[0]:
        return scp["host"].lower()
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        host = None
    return host.lower() if host else ""


def allowed_hosts(secret: Mapping[str, Any]) -> list[str]:
    """The hosts a Secret's owner allows its credentials to go to (comma- or space-separated)."""
    annotations = objects.annotations(secret)
    text = str(annotations.get(constants.ANNOTATION_ALLOWED_HOSTS) or "")
    return [h.strip().lower() for h in re.split(r"[,\s]+", text) if h.strip()]


def check_secret(secret: Mapping[str, Any], *, url: str) -> None:
    """Raise Refused unless the Secret is marked for Gigafactory and allows the host of `url`.

    A local repository (dev mode, tests) connects nowhere: only the label is required then."""
    name = objects.name(secret) or "?"
    if objects.labels(secret).get(constants.LABEL_CREDENTIALS) != "true":
        raise Refused("SecretNotForGigafactory",
                      f"{FIELD}: Secret {name} is not marked for Gigafactory use (label {constants.LABEL_CREDENTIALS}: \"true\"); "
                      "its contents were sent nowhere")
    host = url_host(url)
    if host is None:
        return
    hosts = allowed_hosts(secret)
    if not host or host not in hosts:
        raise Refused("HostNotAllowed",
                      f"{FIELD}: Secret {name} may not be sent to host {host or url!r} "
                      f"(its annotation {constants.ANNOTATION_ALLOWED_HOSTS} allows: {', '.join(hosts) or 'none'})")


def secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """A credentials Secret's keys, decoded (data, then stringData over it); only for a Secret that
    passed `check_secret`."""
    decoded = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in objects.data(secret).items()}
    decoded.update(objects.mapping(secret.get("stringData")))
    return decoded


# --- log references ---

_LOG_REF = re.compile(r"^configmap/(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/(?P<name>[a-z0-9]([-.a-z0-9]*[a-z0-9])?)$")


def log_name_prefix(pod: str) -> str:
    """Every log ConfigMap a runner pod creates is named with this prefix (the runner policy holds it to it)."""
    return f"{constants.LOG_PREFIX}{pod}-"


def parse_log_ref(ref: Any, *, pod: Any) -> tuple[str, str] | None:
    """(namespace, name) of a logRef "configmap/<namespace>/gf-log-<pod>-…" of the attempt run on `pod`;
    None for anything else (malformed, or naming a log of another pod)."""
    found = _LOG_REF.fullmatch(str(ref or ""))
    if found is None or not pod or not found["name"].startswith(log_name_prefix(str(pod))):
        return None
    return found["namespace"], found["name"]


def log_belongs(configmap: Mapping[str, Any], *, pod: str, job_uid: str) -> bool:
    """Whether a log ConfigMap was made for this job's attempt on this pod: its name and labels say so."""
    labels = objects.labels(configmap)
    return (objects.name(configmap).startswith(log_name_prefix(pod))
            and labels.get(constants.LABEL_ROLE) == "log" and labels.get(constants.LABEL_POD) == pod
            and labels.get(constants.LABEL_JOB_UID) == job_uid)
