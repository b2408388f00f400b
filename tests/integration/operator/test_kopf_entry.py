"""`kopf run -m gigafactory.kopfmain` hosts the same operator: a job binds under it too; it honours
GIGAFACTORY_LEADER_ELECTION, and the process ends when the operator's work ends (lost leadership)."""

import contextlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

from gigafactory import kubeclient, leases
from tests.conftest import wait_for
from tests.integration.operator import stubs


@contextlib.contextmanager
def kopf_run(kubeconfig: str, tmp_path: pathlib.Path, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs.ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
           "GIGAFACTORY_KUBECONFIG": kubeconfig, "GIGAFACTORY_HTTP_PORT": "0", **settings}
    # kopf logs in with GIGAFACTORY_KUBECONFIG too: no $KUBECONFIG, and no default file to fall back on.
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(tmp_path)
    log = tmp_path / "kopf.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-m", "gigafactory.kopfmain"],
                                   env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=stubs.ROOT)
    try:
        yield process
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_kopf_run_binds_a_job(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    factory = stubs.unique("kopf")
    api.create_factory(factory, namespace)
    stubs.StubRunner(api, pod=f"{factory}-0", namespace=namespace, factory=factory).announce()
    api.create_job(namespace, "via-kopf")
    try:
        with kopf_run(kubeconfig, tmp_path, GIGAFACTORY_RUNNER_NAMESPACES=namespace):
            wait_for(lambda: (api.job(namespace, "via-kopf").get("status") or {}).get("phase") == "Bound", timeout=20,
                     message="the job never bound under kopf run")
            assert api.job(namespace, "via-kopf")["status"]["assignment"]["pod"] == f"{factory}-0"
    finally:
        api.call("delete", stubs.kubeclient.FACTORIES, factory)


def test_kopf_run_takes_the_leader_lease_and_exits_when_it_loses_it(kubeconfig, namespace, tmp_path) -> None:
    """Before, under `kopf run` GIGAFACTORY_LEADER_ELECTION was silently ignored (no elector was
    built): two replicas both worked. And a work task that ended left kopf running, looking healthy."""
    api = stubs.Api(kubeconfig)
    lease_name = stubs.unique("leader")
    with kopf_run(kubeconfig, tmp_path, GIGAFACTORY_LEADER_ELECTION="true", GIGAFACTORY_NAMESPACE=namespace,
                  GIGAFACTORY_LEADER_LEASE_NAME=lease_name, GIGAFACTORY_LEADER_LEASE_SECONDS="4",
                  GIGAFACTORY_RUNNER_NAMESPACES=namespace) as process:
        def held():
            try:
                return (api.call("get", kubeclient.LEASES, lease_name, namespace=namespace).get("spec") or {}).get("holderIdentity")
            except kubeclient.NotFound:
                return None
        wait_for(held, timeout=20, message="the kopf-hosted operator never took the leader Lease")
        # Another replica takes the Lease over (as after a partition): this one must stop working.
        lease = api.call("get", kubeclient.LEASES, lease_name, namespace=namespace)
        api.call("patch", kubeclient.LEASES, lease_name, {
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
            "spec": {"holderIdentity": "another-replica", "renewTime": leases.format_micro_time(leases.now()),
                     "leaseDurationSeconds": 600}}, namespace=namespace)
        wait_for(lambda: process.poll() is not None, timeout=30, message="kopf kept running after its work lost leadership")
