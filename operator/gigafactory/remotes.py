"""Git with a remote, shared by the runner and the operator: URL and ref checks, credentials that
reach git only through the child's environment, every call with pinned config, and a branch deleted
only while it still points at the commit a job pushed.

Credentials reach git only through the environment of the git child (an askpass helper or an ssh
key file), never argv, config or logs; what git prints is scrubbed of them. Git runs in threads so
the caller's event loop stays free. The runner's mirrors and worktrees (runner/worktrees.py) are
built on `Git`; the operator's finalizer deletes a deleted job's branch with it
(controllers/finalizing.py): neither imports the other.
"""

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping

import git

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$GIGAFACTORY_GIT_USERNAME" ;;
  *) printf '%s\\n' "$GIGAFACTORY_GIT_PASSWORD" ;;
esac
"""
_REMOTE_HELPER = re.compile(r"^[A-Za-z0-9+.-]+::")
# Settings of every git call that no config file may change: what an agent writes into the worktree's
# or the shared mirror's config, or into $HOME/.gitconfig, must not run code or redirect credentials.
# (GIT_CONFIG_COUNT/KEY/VALUE, git >= 2.31: above every config file; GIT_CONFIG_GLOBAL and
# GIT_CONFIG_NOSYSTEM leave out the global and system files altogether.)
_PINNED_CONFIG = (
    ("core.hooksPath", "/dev/null"),   # no hook runs: not the repository's, not one planted in the mirror
    ("core.fsmonitor", "false"),       # an fsmonitor is a program git would start
    ("credential.helper", ""),         # credentials come from our askpass only, and go nowhere else
    ("core.askPass", ""),
    ("protocol.allow", "never"),       # transports: only those _PROTOCOLS names
    ("uploadpack.packObjectsHook", ""),
    ("core.gitProxy", ""),
    ("http.proxy", ""),
    ("diff.external", ""),
)
_PROTOCOLS = ("https", "ssh", "git", "http")
# scheme://-host or scheme://-user@host: ssh would take it for an option (git refuses it too; so do we, first).
_OPTION_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/@]*@)?-")
SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
# scheme://user:password@host — a token inline in the URL.
_USERINFO_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@")
# What git (over HTTP, SSH or locally) prints when the remote refuses who we are...
_AUTH_SIGNS = ("authentication failed", "could not read username", "could not read password",
               "permission denied", "the requested url returned error: 401", "the requested url returned error: 403",
               "invalid username or password", "terminal prompts disabled", "host key verification failed")
# ...and when there is no such repository. Anything else (DNS, refused connection, timeout) may pass.
_NOT_FOUND_SIGNS = ("not found", "does not appear to be a git repository", "no such file or directory",
                    "the requested url returned error: 404", "does not exist")


class GitFailure(Exception):
    """A git step failed; `outcome`/`reason` classify it for the report. Messages never hold secrets."""

    def __init__(self, outcome: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.reason = reason
        self.message = message


def _output(exc: git.GitCommandError) -> str:
    """What git said (stderr, then stdout), without gitpython's wrapping."""
    parts = []
    for wrapped, label in ((exc.stderr, "stderr"), (exc.stdout, "stdout")):
        text = str(wrapped or "").strip()
        prefix = f"{label}: '"
        if text.startswith(prefix):
            text = text[len(prefix):].removesuffix("'")
        if text:
            parts.append(text.strip())
    return "\n".join(parts) or str(exc)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[-2000:]


def check_url(url: str, *, allow_local: bool, credentials: "Credentials | None" = None) -> None:
    """Refuse remote helpers always, local repositories unless allowed (dev mode, tests), and a token
    over plain http:// (anyone on the path would read it)."""
    if url.startswith("-") or _REMOTE_HELPER.match(url) or _OPTION_HOST.match(url):
        raise GitFailure("Rejected", "RepoNotAllowed", f"repository URL {url!r} names a git remote helper or an option")
    local = url.startswith("file://") or url.startswith("/")
    if local and not allow_local:
        raise GitFailure("Rejected", "RepoNotAllowed", f"local repositories are not allowed on this runner: {url!r}")
    if not local and not re.match(r"^(https?|ssh|git)://|^[A-Za-z0-9._-]+@[^:/]+:", url):
        raise GitFailure("Rejected", "RepoNotAllowed", f"unsupported repository URL {url!r}")
    if url.startswith("http://") and credentials is not None and credentials.token:
        raise GitFailure("Rejected", "InsecureTransport",
                         "credentials are never sent over plain http://: use an https:// URL")
    if _USERINFO_PASSWORD.match(url):
        # It would sit in the mirror's config and in every message that names the URL.
        raise GitFailure("Rejected", "RepoNotAllowed",
                         "the repository URL carries a password or token; put it in the credentials Secret")


def check_ref(ref: str, *, what: str) -> None:
    """A name git itself accepts as a branch (git check-ref-format), so nothing fails after the agent ran."""
    reason = "InvalidBranch" if what == "branch" else "BaseRefNotFound"
    try:
        git.Git().execute(["git", "check-ref-format", "--branch", ref])
    except git.GitCommandError:
        raise GitFailure("Rejected", reason, f"{what} {ref!r} is not a valid git ref name") from None
    if not SAFE_REF.match(ref):
        raise GitFailure("Rejected", reason, f"{what} {ref!r} is not a valid git ref name")


def classify_remote_error(text: str, *, url: str) -> GitFailure:
    """A failed fetch → what the job's owner can do about it. Only faults a retry may cure stay InfraError."""
    lowered = text.lower()
    if any(sign in lowered for sign in _AUTH_SIGNS):
        return GitFailure("Rejected", "BadCredentials", f"authentication to {url} failed: {_last_line(text)}")
    if any(sign in lowered for sign in _NOT_FOUND_SIGNS):
        return GitFailure("Rejected", "RepoNotFound", f"repository {url} does not exist or is not readable: {_last_line(text)}")
    return GitFailure("InfraError", "FetchFailed", f"cannot fetch {url}: {_last_line(text)}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Please make sure")]
    return lines[-1][:500] if lines else "no error text"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What the job's Secret holds: an HTTPS token (and user name) or an SSH key."""

    username: str = "x-access-token"
    token: str = ""
    ssh_key: str = ""
    known_hosts: str = ""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.token, self.ssh_key)


def credentials_from_secret(data: Mapping[str, str]) -> Credentials:
    """Secret data (already base64-decoded) → Credentials; unknown keys are ignored."""
    return Credentials(
        username=data.get("username") or "x-access-token",
        token=data.get("token") or data.get("password") or "",
        ssh_key=data.get("ssh-privatekey") or "",
        known_hosts=data.get("known_hosts") or "",
    )


@dataclasses.dataclass
class Git:
    """Git calls under one directory (its askpass helper, scratch repositories, key files)."""

    root: pathlib.Path
    # Network git calls (fetch, ls-remote, push) are killed after this long: a remote that accepts a
    # connection and then says nothing must not hold a mirror's lock (and every job of that repo) forever.
    network_timeout: float = 600.0
    # file:// and local paths as remotes (dev mode, tests); otherwise git may not use the file transport.
    allow_local: bool = False
    # SSH without known_hosts in the credentials Secret: refused (the host could be anyone's), unless the
    # pool opts out, then the first key seen is trusted (accept-new) for that one call.
    accept_new_host_keys: bool = False

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.askpass = self.root / "askpass.sh"
        self.askpass.write_text(_ASKPASS)
        self.askpass.chmod(stat.S_IRWXU)

    @contextlib.contextmanager
    def git_env(self, credentials: Credentials) -> Iterator[dict[str, str]]:
        """Environment for one git child: no prompts, credentials only through askpass or a key file."""
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": str(self.askpass), "SSH_ASKPASS": str(self.askpass),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
               "GIT_ALLOW_PROTOCOL": ":".join(_PROTOCOLS + (("file",) if self.allow_local else ())),
               # Always ours, so that no core.sshCommand of a config file is ever run.
               "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -F /dev/null",
               "GIT_CONFIG_COUNT": str(len(_PINNED_CONFIG))}
        for index, (key, value) in enumerate(_PINNED_CONFIG):
            env[f"GIT_CONFIG_KEY_{index}"], env[f"GIT_CONFIG_VALUE_{index}"] = key, value
        keydir = None
        try:
            if credentials.token:
                env["GIGAFACTORY_GIT_USERNAME"] = credentials.username
                env["GIGAFACTORY_GIT_PASSWORD"] = credentials.token
            if credentials.ssh_key:
                if not credentials.known_hosts and not self.accept_new_host_keys:
                    raise GitFailure("Rejected", "NoKnownHosts",
                                     "an SSH key without known_hosts in the credentials Secret: the host's key cannot be "
                                     "verified (add known_hosts, or let the pool accept new host keys)")
                keydir = tempfile.mkdtemp(prefix="gf-ssh-", dir=self.root)
                key_file = pathlib.Path(keydir) / "key"
                key_file.touch(mode=0o600)
                key_file.write_text(credentials.ssh_key if credentials.ssh_key.endswith("\n") else credentials.ssh_key + "\n")
                hosts = pathlib.Path(keydir) / "known_hosts"
                hosts.write_text(credentials.known_hosts)
                checking = "yes" if credentials.known_hosts else "accept-new"
                # Paths quoted: git hands this string to a shell, and a work dir may hold spaces.
                env["GIT_SSH_COMMAND"] = (f"ssh -F /dev/null -i {shlex.quote(str(key_file))} -o IdentitiesOnly=yes "
                                          f"-o UserKnownHostsFile={shlex.quote(str(hosts))} "
                                          f"-o StrictHostKeyChecking={checking} -o BatchMode=yes")
            yield env
        finally:
            if keydir:
                shutil.rmtree(keydir, ignore_errors=True)

    async def _git(self, cwd: pathlib.Path | None, args: list[str], credentials: Credentials, *,
                   failure: tuple[str, str], network: bool = False, git_dir: pathlib.Path | None = None,
                   work_tree: pathlib.Path | None = None, extra_env: Mapping[str, str] | None = None) -> str:
        """One git call. With git_dir (and work_tree), no repository discovery happens: no `.git` file
        or directory of a worktree, nor anything it points at, is read."""
        def call() -> str:
            with self.git_env(credentials) as env:
                if git_dir is not None:
                    env["GIT_DIR"] = str(git_dir)
                if work_tree is not None:
                    env["GIT_WORK_TREE"] = str(work_tree)
                env.update(extra_env or {})
                where = cwd or work_tree or git_dir
                try:
                    return git.Git(str(where) if where else None).execute(
                        ["git", *args], env=env, kill_after_timeout=self.network_timeout if network else None)
                except git.GitCommandError as exc:
                    detail = _scrub(_output(exc), credentials.secrets)
                    raise GitFailure(failure[0], failure[1], detail) from None

        return await asyncio.to_thread(call)

    async def delete_branch(self, *, url: str, branch: str, commit: str, credentials: Credentials) -> bool:
        """Delete a pushed branch from the remote, only while it still points at `commit` (the one the
        job pushed): a branch someone has moved on since is kept. True when this call deleted it; False
        when the remote had it elsewhere or not at all (git says "stale info" for both)."""
        check_ref(branch, what="branch")
        check_url(url, allow_local=self.allow_local, credentials=credentials)
        scratch = self.root / "cleanup.git"
        if not scratch.exists():
            await asyncio.to_thread(git.Repo.init, str(scratch), bare=True)
        ref = f"refs/heads/{branch}"
        try:
            await self._git(scratch, ["push", f"--force-with-lease={ref}:{commit}", "--", url, f":{ref}"],
                            credentials, failure=("PushFailed", "DeleteRejected"), network=True)
        except GitFailure as exc:
            if "stale info" in exc.message:
                return False  # moved since the job pushed it, or gone: nothing of ours to delete
            raise
        return True


def classify_push_error(message: str, *, branch: str) -> GitFailure:
    """A refused push → why: the branch exists already (our empty --force-with-lease expectation
    failed), the credentials were refused, or the remote's own words (hooks) and the ref's verdict."""
    if "stale info" in message:
        return GitFailure("PushFailed", "BranchExists", f"branch {branch} already exists on the remote")
    lowered = message.lower()
    if any(sign in lowered for sign in _AUTH_SIGNS):
        return GitFailure("PushFailed", "BadCredentials", f"the remote refused the push credentials: {_last_line(message)}")
    lines = [line.strip() for line in message.splitlines()
             if line.strip().startswith(("remote:", "!", "error:", "fatal:")) and "failed to push some refs" not in line]
    return GitFailure("PushFailed", "PushRejected", f"the remote refused the push: {' | '.join(lines)[-1500:] or _last_line(message)}")
