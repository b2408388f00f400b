"""A real Kubernetes control plane for tests, envtest-style: etcd + kube-apiserver (+ kube-controller-manager).

The binaries come from a directory in the `KUBEBUILDER_ASSETS` convention of controller-runtime's
envtest: `$KUBEBUILDER_ASSETS`, else what `../shared/k8s/assets` prints when that script exists beside
the project. Each control plane gets fresh certificates, a fresh etcd data directory and free loopback
ports; nothing listens on any other address. It is the reference for the embedded server
(`localcluster`): where the two differ, this one is right.

    with controlplane.running() as cp:          # about 5 s
        cp.kubeconfig                            # admin (system:masters) kubeconfig path
        cp.kubeconfig_for("alice", ["team-a"])   # a kubeconfig for any user and groups (client cert)

From a shell (for the benchmarks, `gigafactory dev --kubeconfig`, or kubectl by hand):

    python -m tests.controlplane --kubeconfig /tmp/real.kubeconfig            # serves until Ctrl-C
    python -m tests.controlplane --kubeconfig /tmp/real.kubeconfig -- CMD ...  # runs CMD, then stops
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import os
import pathlib
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
ASSETS_SCRIPT = ROOT.parent / "shared" / "k8s" / "assets"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
READY_TIMEOUT = 90.0  # a busy 2-core machine has taken ~20 s where an idle one takes 5


class ControlPlaneError(RuntimeError):
    pass


def find_assets() -> pathlib.Path | None:
    """The directory holding the binaries, or None when this machine has none."""
    named = os.environ.get("KUBEBUILDER_ASSETS")
    if named:
        return pathlib.Path(named)
    if ASSETS_SCRIPT.is_file():
        result = subprocess.run([str(ASSETS_SCRIPT)], capture_output=True, text=True, timeout=300)
        if result.returncode == 0 and result.stdout.strip():
            return pathlib.Path(result.stdout.strip().splitlines()[-1])
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


class ControlPlane:
    """One etcd, one kube-apiserver and (by default) one kube-controller-manager on loopback."""

    def __init__(self, assets: pathlib.Path, *, directory: pathlib.Path | None = None,
                 controller_manager: bool = True) -> None:
        self.assets = assets
        self.dir = directory or pathlib.Path(tempfile.mkdtemp(prefix="gf-k8s-"))
        self.controller_manager = controller_manager
        self.token = secrets.token_hex(16)
        self.port = 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> str:
        return str(self.dir / "admin.kubeconfig")

    # ----------------------------------------------------------------- start and stop

    def start(self) -> "ControlPlane":
        for name in BINARIES[: 3 if self.controller_manager else 2]:
            if not (self.assets / name).is_file():
                raise ControlPlaneError(f"{self.assets} has no {name}")
        os.chmod(self.dir, 0o700)
        self._certificates()
        try:
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig(self.kubeconfig, user={"token": self.token})
            self._wait_ready()
            if self.controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # The controller manager first, etcd last: the apiserver must not lose its store while serving.
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- credentials

    def _certificates(self) -> None:
        d = self.dir
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-subj", "/CN=gigafactory-test-ca", "-days", "7", cwd=d)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "serving.key", "-out", "serving.csr",
                 "-subj", "/CN=kube-apiserver", cwd=d)
        (d / "serving.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\n"
            "extendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "serving.crt", "-days", "7", "-extfile", "serving.ext", cwd=d)
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        (d / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] | list[str] = (), *,
                       path: str | os.PathLike[str] | None = None) -> str:
        """A kubeconfig that authenticates as `user` in `groups`, with a client certificate of the CA."""
        name = f"user-{secrets.token_hex(4)}"
        subject = "/CN=" + user + "".join(f"/O={group}" for group in groups)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=self.dir)
        (self.dir / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "7", "-extfile", f"{name}.ext", cwd=self.dir)
        target = str(path or self.dir / f"{name}.kubeconfig")
        self._write_kubeconfig(target, user={
            "client-certificate-data": _b64(self.dir / f"{name}.crt"),
            "client-key-data": _b64(self.dir / f"{name}.key"),
        })
        return target

    def kubeconfig_with_token(self, token: str, *, path: str | os.PathLike[str]) -> str:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's, say)."""
        self._write_kubeconfig(str(path), user={"token": token})
        return str(path)

    def _write_kubeconfig(self, path: str, *, user: dict[str, str]) -> None:
        import yaml

        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "real", "cluster": {"server": self.server,
                                                      "certificate-authority-data": _b64(self.dir / "ca.crt")}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "user"}}],
            "current-context": "real",
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(config, handle)

    # ----------------------------------------------------------------- processes

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        try:
            self.processes[name] = subprocess.Popen([str(self.assets / name), *args], stdout=log,
                                                    stderr=subprocess.STDOUT, cwd=self.dir,
                                                    start_new_session=True)
        finally:
            log.close()

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            "--data-dir", str(self.dir / "etcd"), "--name", "test",
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
            # Test data: no need to sync every write to disk (a busy machine's fsync is slow).
            "--unsafe-no-fsync",
        ])

    def _start_apiserver(self) -> None:
        self.port = free_port()
        d = self.dir
        self._spawn("kube-apiserver", [
            f"--etcd-servers={self.etcd_url}", f"--secure-port={self.port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--tls-cert-file={d / 'serving.crt'}", f"--tls-private-key-file={d / 'serving.key'}",
            f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none", "--profiling=false",
            # ValidatingAdmissionPolicy is beta in 1.28 and off by default; the chart's policies need it.
            "--feature-gates=ValidatingAdmissionPolicy=true",
            "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
            # Pods never run here (no kubelet); without this plugin a Pod need not wait for the
            # namespace's `default` ServiceAccount that the controller manager creates a moment later.
            "--disable-admission-plugins=ServiceAccount",
        ])

    def _start_controller_manager(self) -> None:
        d = self.dir
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}", "--secure-port=0", "--bind-address=127.0.0.1",
            "--leader-elect=false", "--use-service-account-credentials=false",
            # Its admission-policy status controller type-checks policies' CEL (status.typeChecking).
            "--feature-gates=ValidatingAdmissionPolicy=true",
            f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
            f"--cluster-signing-cert-file={d / 'ca.crt'}", f"--cluster-signing-key-file={d / 'ca.key'}",
            "--profiling=false",
        ])

    def _wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ControlPlaneError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.read().strip() == b"ok":
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"kube-apiserver not ready after {READY_TIMEOUT:.0f} s:\n"
                                        f"{self.log_tail('kube-apiserver')}")
            time.sleep(0.25)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes.values() if process.poll() is None]


def _b64(path: pathlib.Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@contextlib.contextmanager
def running(assets: pathlib.Path | None = None, *, controller_manager: bool = True) -> Iterator[ControlPlane]:
    found = assets or find_assets()
    if found is None:
        raise ControlPlaneError("no Kubernetes binaries: set KUBEBUILDER_ASSETS or provide ../shared/k8s/assets")
    with ControlPlane(found, controller_manager=controller_manager) as plane:
        yield plane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="where to write the admin kubeconfig (0600)")
    parser.add_argument("--no-controller-manager", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS: run it, then stop")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with running(controller_manager=not args.no_controller_manager) as plane:
        shutil.copyfile(plane.kubeconfig, args.kubeconfig)
        os.chmod(args.kubeconfig, 0o600)
        print(f"kube-apiserver at {plane.server}; kubeconfig {args.kubeconfig}", file=sys.stderr, flush=True)
        if command:
            return subprocess.call(command)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    sys.exit(main())
