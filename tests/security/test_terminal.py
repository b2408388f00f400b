"""Red team: text from a job, an agent or the API must not drive the terminal of the person reading it.

Each attack plants terminal control sequences where a tenant or an agent can write (the prompt, an
attempt's message, the agent's log) and reads them back with the CLI as a person would: the bytes
must arrive as visible escapes, never as ESC/BEL/CSI/bidi characters the terminal would act on."""
import pathlib
import re
import uuid

import kubernetes
import pytest

from gigafactory.cli import terminal

ROOT = pathlib.Path(__file__).resolve().parents[2]
GROUP, VERSION = "gigafactory.dev", "v1alpha1"
CLIPBOARD = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # OSC 52: write the clipboard
CLEAR = "\x1b[2J\x1b[H"                       # clear the screen, cursor home
TROJAN = "\u202eexe.txt"                       # right-to-left override
HOSTILE = f"fix it{CLIPBOARD}{CLEAR}{TROJAN}\rrm -rf /"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(autouse=True)
def _crds(install_crds) -> None:
    install_crds(ROOT / "crds")


def _hostile_job(api_client, namespace: str) -> str:
    name = f"evil-{uuid.uuid4().hex[:6]}"
    custom = kubernetes.client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": name},
        "spec": {"repo": {"url": "https://git.example/app.git"}, "task": {"prompt": HOSTILE}, "agent": {"profile": "script"}},
    })
    uid = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", name)["metadata"]["uid"]
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agentjobs", name, {"status": {
        "phase": "Failed", "attempt": 1,
        "attempts": [{"attempt": 1, "outcome": "AgentFailed", "reason": "ExitCode", "message": HOSTILE,
                      "factory": "f", "pod": "p", "logRef": f"configmap/{namespace}/gf-log-p-{name}-1"}],
    }})
    # A log as a runner writes it: named after its pod, labelled with its pod and the job (consent.log_belongs).
    kubernetes.client.CoreV1Api(api_client).create_namespaced_config_map(namespace, {
        "metadata": {"name": f"gf-log-p-{name}-1", "labels": {"gigafactory.dev/role": "log", "gigafactory.dev/pod": "p",
                                                            "gigafactory.dev/job-uid": uid}},
        "data": {"output": f"agent says {HOSTILE}\nline two\ttabbed\n"}})
    return name


@pytest.mark.parametrize("command", ["describe", "logs", "get", "explain"])
def test_control_sequences_from_a_job_are_shown_not_obeyed(command, gf, api_client, namespace) -> None:
    name = _hostile_job(api_client, namespace)
    output = gf(command, name, "-n", namespace)
    assert not RAW.search(output), repr(output)
    if command in ("describe", "logs"):  # these show the hostile text itself: visibly
        assert "\\x1b]52;c;ZWNobyBwd25lZA==" in output and "\\x1b[2J" in output and "\\u202e" in output
    if command == "logs":  # the agent's output byte for byte (tables drop BEL and CR on their own)
        assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in output and "\\x0drm -rf /" in output


def test_list_shows_hostile_names_of_other_fields_escaped(gf, api_client, namespace) -> None:
    _hostile_job(api_client, namespace)
    assert not RAW.search(gf("list", "-n", namespace))


def test_logs_keep_newlines_and_tabs(gf, api_client, namespace) -> None:
    name = _hostile_job(api_client, namespace)
    assert "line two\ttabbed\n" in gf("logs", name, "-n", namespace)


@pytest.mark.parametrize("ref", ["configmap/../../etc/passwd", "garbage", "secret/kube-system/admin",
                                 "configmap/ns/" + "x" * 300, f"configmap/ns/name{CLEAR}"])
def test_a_garbage_log_reference_is_one_clear_line(ref, gf, api_client, namespace) -> None:
    name = _hostile_job(api_client, namespace)
    kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "agentjobs", name,
        {"status": {"attempts": [{"attempt": 1, "outcome": "AgentFailed", "reason": "ExitCode", "logRef": ref}]}})
    output = gf("logs", name, "-n", namespace, code=1)
    assert "malformed log reference" in output and len(output.strip().splitlines()) == 1
    assert not RAW.search(output)


@pytest.mark.parametrize("text, shown", [
    pytest.param("a\x1b[2Jb", "a\\x1b[2Jb", id="csi"),
    pytest.param("a\x07b\x00c", "a\\x07b\\x00c", id="bel-nul"),
    pytest.param("a\x9bb", "a\\x9bb", id="c1-csi"),
    pytest.param("a\u2066b\u2069", "a\\u2066b\\u2069", id="bidi-isolate"),
    pytest.param("keep\nnew\tlines", "keep\nnew\tlines", id="newline-tab"),
    pytest.param("ünïcode ✓", "ünïcode ✓", id="printable-unicode"),
])
def test_escape(text, shown) -> None:
    assert terminal.escape(text) == shown
