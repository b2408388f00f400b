"""An embedded Kubernetes API server for tests and local development.

It speaks the real API over HTTP — discovery, CRUD, watch, status subresource, patch types,
selectors, finalizers, CRD schema validation — so that kopf, the `kubernetes` client and kubectl
talk to it as to a cluster. See docs/testing.md for what is and is not emulated.

    server = await localcluster.start(port=0, crd_dirs=["crds"])
    server.write_kubeconfig(".dev/kubeconfig")
    ...
    await server.stop()

    with localcluster.running(crd_dirs=["crds"]) as srv:   # from synchronous code
        srv.write_kubeconfig(path)
"""
from localcluster.serving import LocalCluster, ThreadedCluster, new_token, running, start, start_in_thread

__all__ = ["LocalCluster", "ThreadedCluster", "new_token", "running", "start", "start_in_thread"]
