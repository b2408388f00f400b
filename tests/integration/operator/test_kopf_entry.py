"""`kopf run -m gigafactory.kopfmain` hosts the same operator: a job binds under it too."""

import os
import subprocess
import sys


from tests.conftest import wait_for
from tests.integration.operator import stubs


def test_kopf_run_binds_a_job(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    factory = stubs.unique("kopf")
    api.create_factory(factory, namespace)
    stubs.StubRunner(api, pod=f"{factory}-0", namespace=namespace, factory=factory).announce()
    api.create_job(namespace, "via-kopf")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs.ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
           "GIGAFACTORY_KUBECONFIG": kubeconfig, "GIGAFACTORY_HTTP_PORT": "0", "GIGAFACTORY_RUNNER_NAMESPACES": namespace}
    # kopf logs in with GIGAFACTORY_KUBECONFIG too: no $KUBECONFIG, and no default file to fall back on.
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(tmp_path)
    log = tmp_path / "kopf.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-m", "gigafactory.kopfmain"],
                                   env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=stubs.ROOT)
    try:
        wait_for(lambda: (api.job(namespace, "via-kopf").get("status") or {}).get("phase") == "Bound", timeout=20,
                 message="the job never bound under kopf run")
        assert api.job(namespace, "via-kopf")["status"]["assignment"]["pod"] == f"{factory}-0"
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        api.call("delete", stubs.kubeclient.FACTORIES, factory)
