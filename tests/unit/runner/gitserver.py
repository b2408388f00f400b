"""A real git server for credential tests: `git http-backend` behind HTTPS and basic auth on 127.0.0.1.

Clone, fetch and push work with the right token; anything else gets 401, as a git host answers a
bad token. Shared by the unit tests (the git layer) and the integration tests (the whole runner).
HTTPS with a certificate of its own CA (`server.ca`: point GIT_SSL_CAINFO at it), because the runner
never sends credentials over plain http://; `tls=False` serves plain HTTP, for the tests of that rule.
"""

import base64
import functools
import http.server
import pathlib
import ssl
import subprocess
import tempfile
import threading

BACKEND = "/usr/lib/git-core/git-http-backend"


@functools.cache
def certificate() -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (made once per process): (certificate, key) paths."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="gf-gitserver-"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2"],
                   cwd=directory, check=True, capture_output=True)
    return str(directory / "cert.pem"), str(directory / "key.pem")


def serve(root: pathlib.Path, *, user: str = "x-access-token", token: str,
          tls: bool = True) -> http.server.ThreadingHTTPServer:
    """Serve the bare repositories under `root` at `server.url`/<name>; shut it down after."""
    expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _cgi(self) -> None:
            server.requests += 1  # type: ignore[attr-defined]
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {"GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
                   "REQUEST_METHOD": self.command, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "REMOTE_USER": user, "CONTENT_LENGTH": str(len(body))}
            out = subprocess.run([BACKEND], input=body, env=env, capture_output=True).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.split(b"\r\n"):
                key, _, value = line.decode().partition(": ")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers.append((key, value))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _cgi

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = 0  # type: ignore[attr-defined]
    if tls:
        cert, key = certificate()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.ca = certificate()[0]  # type: ignore[attr-defined]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
