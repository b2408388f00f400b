"""HTTPS credentials against a real git server (git http-backend behind basic auth on 127.0.0.1):
the right token clones, a wrong one fails clearly, and the token appears in no output or file."""

import base64
import http.server
import pathlib
import subprocess
import threading

import pytest

from gigafactory.runner import worktrees
from tests import gitrepos

TOKEN = "ghp_correct-horse-battery-staple"
WRONG = "ghp_wrong-token-0123456789"


def _serve(root: pathlib.Path):
    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _cgi(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {"GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
                   "REQUEST_METHOD": self.command, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "REMOTE_USER": "x-access-token", "CONTENT_LENGTH": str(len(body))}
            out = subprocess.run(["/usr/lib/git-core/git-http-backend"], input=body, env=env, capture_output=True).stdout
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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def https_like_remote(tmp_path):
    gitrepos.make_remote(tmp_path / "srv", name="repo.git")
    server = _serve(tmp_path / "srv")
    yield f"http://127.0.0.1:{server.server_address[1]}/repo.git"
    server.shutdown()


async def test_right_token_clones(tmp_path, https_like_remote) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    mirror = await workspace.sync_mirror(https_like_remote, worktrees.Credentials(token=TOKEN))
    assert (mirror / "HEAD").exists()
    config = (mirror / "config").read_text()
    assert TOKEN not in config  # not in the repository's config


async def test_wrong_token_is_a_clear_error_without_the_secret(tmp_path, https_like_remote) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    with pytest.raises(worktrees.GitFailure) as info:
        await workspace.sync_mirror(https_like_remote, worktrees.Credentials(token=WRONG))
    assert (info.value.outcome, info.value.reason) == ("Rejected", "BadCredentials")
    assert "authentication" in info.value.message and WRONG not in info.value.message
    leaked = [p for p in (tmp_path / "work").rglob("*") if p.is_file() and WRONG in p.read_text(errors="ignore")]
    assert leaked == []
