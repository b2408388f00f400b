"""consent: which Secret may go to which host, and which log a reader may trust (pure tables)."""
import pytest

from gigafactory import consent


@pytest.mark.parametrize("url, host", [
    pytest.param("https://github.com/acme/api.git", "github.com", id="https"),
    pytest.param("https://x-access-token@GitHub.com:443/acme/api.git", "github.com", id="https-user-port-case"),
    pytest.param("http://127.0.0.1:18555/x.git", "127.0.0.1", id="http-ip"),
    pytest.param("ssh://git@git.example.com:2222/acme/api.git", "git.example.com", id="ssh"),
    pytest.param("git@github.com:acme/api.git", "github.com", id="scp-like"),
    pytest.param("git://git.example.com/acme/api.git", "git.example.com", id="git"),
    pytest.param("https://[::1]:8443/x.git", "::1", id="ipv6"),
    pytest.param("/srv/repos/api.git", None, id="local-path"),
    pytest.param("file:///srv/repos/api.git", None, id="file-url"),
])
def test_url_host(url, host) -> None:
    assert consent.url_host(url) == host


def secret(*, labels=None, hosts=None) -> dict:
    meta = {"name": "git-creds", "labels": labels if labels is not None else {"gigafactory.dev/credentials": "true"}}
    if hosts is not None:
        meta["annotations"] = {"gigafactory.dev/allowed-hosts": hosts}
    return {"metadata": meta, "data": {}}


@pytest.mark.parametrize("body, url, reason", [
    pytest.param(secret(hosts="github.com"), "https://github.com/acme/api.git", None, id="marked-for-the-host"),
    pytest.param(secret(hosts="gitlab.com, GitHub.com"), "git@github.com:acme/api.git", None, id="one-of-several-any-case"),
    pytest.param(secret(hosts="github.com git.example.com"), "ssh://git@git.example.com/x.git", None, id="space-separated"),
    pytest.param(secret(), "/srv/repos/api.git", None, id="local-repo-needs-only-the-label"),
    pytest.param(secret(labels={}, hosts="github.com"), "https://github.com/x.git", "SecretNotForGigafactory", id="unlabelled"),
    pytest.param(secret(labels={"gigafactory.dev/credentials": "True"}, hosts="github.com"), "https://github.com/x.git",
                 "SecretNotForGigafactory", id="label-not-exactly-true"),
    pytest.param(secret(labels={}), "/srv/repos/api.git", "SecretNotForGigafactory", id="unlabelled-even-locally"),
    pytest.param(secret(), "https://github.com/x.git", "HostNotAllowed", id="no-hosts-named"),
    pytest.param(secret(hosts="github.com"), "https://github.com.evil.example/x.git", "HostNotAllowed", id="suffix-trick"),
    pytest.param(secret(hosts="github.com"), "https://evil.example/github.com/x.git", "HostNotAllowed", id="host-in-path"),
    pytest.param(secret(hosts="github.com"), "https://github.com@evil.example/x.git", "HostNotAllowed", id="host-as-userinfo"),
    pytest.param(secret(hosts="*"), "https://github.com/x.git", "HostNotAllowed", id="no-wildcards"),
])
def test_check_secret(body, url, reason) -> None:
    if reason is None:
        consent.check_secret(body, url=url)
        return
    with pytest.raises(consent.Refused) as info:
        consent.check_secret(body, url=url)
    assert info.value.reason == reason
    assert info.value.message.startswith("spec.repo.credentialsSecret: Secret git-creds ")


@pytest.mark.parametrize("ref, pod, expected", [
    pytest.param("configmap/runners/gf-log-pod-a-2-abc", "pod-a", ("runners", "gf-log-pod-a-2-abc"), id="own-pod"),
    pytest.param("configmap/runners/gf-log-pod-b-2-abc", "pod-a", None, id="other-pod"),
    pytest.param("configmap/runners/gf-log-pod-a", "pod-a", None, id="prefix-without-dash"),
    pytest.param("configmap/runners/gf-log-pod-a-2", None, None, id="no-pod"),
    pytest.param("configmap/../../etc/passwd", "pod-a", None, id="garbage"),
    pytest.param("secret/runners/gf-log-pod-a-2", "pod-a", None, id="not-a-configmap"),
])
def test_parse_log_ref(ref, pod, expected) -> None:
    assert consent.parse_log_ref(ref, pod=pod) == expected


def log(**labels) -> dict:
    return {"metadata": {"name": "gf-log-pod-a-2-abc",
                         "labels": {"gigafactory.dev/role": "log", "gigafactory.dev/pod": "pod-a", "gigafactory.dev/job-uid": "u1", **labels}}}


@pytest.mark.parametrize("body, belongs", [
    pytest.param(log(), True, id="its-own"),
    pytest.param(log(**{"gigafactory.dev/job-uid": "u2"}), False, id="another-jobs-log"),
    pytest.param(log(**{"gigafactory.dev/pod": "pod-b"}), False, id="labelled-with-another-pod"),
    pytest.param(log(**{"gigafactory.dev/role": "profiles"}), False, id="not-a-log"),
    pytest.param({"metadata": {"name": "gf-log-pod-a-2-abc"}}, False, id="unlabelled"),
])
def test_log_belongs(body, belongs) -> None:
    assert consent.log_belongs(body, pod="pod-a", job_uid="u1") is belongs
