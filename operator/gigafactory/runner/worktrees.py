"""Git on the runner: a bare mirror per repository, a worktree and branch per attempt, push, sweep.

Same-repo jobs on one pod never share a worktree path or a local branch (both carry the job's uid
and the attempt), and every mirror fetch holds that mirror's lock. Every git call is remotes.Git's:
credentials only through the git child's environment, pinned config, git in threads.
"""

import asyncio
import contextlib
import dataclasses
import functools
import os
import pathlib
import shutil
import stat
from collections.abc import Set as AbstractSet
from typing import Any

import git

from gigafactory import leases, remotes

BRANCH_PREFIX = "gf/"
# In a mirror: one ref per running attempt, holding its base commit (the mirror has no worktrees).
_ATTEMPT_REFS = "refs/gigafactory/attempts/"
# In an attempt's trusted git dir: the agent's HEAD as fetched from the agent's repository.
_AGENT_HEAD = "refs/gigafactory/agent-head"
# SUMMARY.md: at most this much is read (a summary is kept to 8000 characters anyway).
SUMMARY_BYTES = 32 * 1024
# Git calls of the sweep: no global or system config.
_PLAIN_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
# What an agent's git dir may not hold when the runner fetches from it: each would make git read
# another repository's objects or refs, or history the agent made up, on the runner's behalf.
_AGENT_GIT_REDIRECTS = ("commondir", "gitdir", "shallow", "info/grafts", "objects/info/http-alternates",
                        "config.worktree", "info/alternates")
_AGENT_GIT_TREES = ("hooks", "worktrees", "modules")
CHANGED_FILES_CHARS = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Checkout:
    """One attempt's files: the worktree the agent works in (with its own `.git`, which the agent
    owns) and the runner's trusted git dir for the same files (which the agent never sees)."""

    name: str
    path: pathlib.Path  # <root>/worktrees/<name>: the agent's cwd, bound read-write into its sandbox
    trusted: pathlib.Path  # <root>/trusted/<name>.git: the runner's metadata of this attempt
    mirror: pathlib.Path
    base: str
    branch: str  # the agent's branch in its own repository (the job's branch)

    @property
    def agent_git(self) -> pathlib.Path:
        return self.path / ".git"

    @property
    def objects(self) -> pathlib.Path:
        """The mirror's objects: the agent's repository borrows them (read-only in the sandbox)."""
        return self.mirror / "objects"

    @property
    def trusted_branch(self) -> str:
        return f"{BRANCH_PREFIX}{self.name}"


@dataclasses.dataclass
class Workspace(remotes.Git):
    """Mirrors and worktrees under one directory, on the git calls of remotes.Git."""

    def __post_init__(self) -> None:
        super().__post_init__()
        (self.root / "mirrors").mkdir(exist_ok=True)
        (self.root / "worktrees").mkdir(exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def mirror_path(self, url: str) -> pathlib.Path:
        return self.root / "mirrors" / f"{leases.repo_key(url)}.git"

    def warm_repos(self) -> list[str]:
        return sorted(p.name.removesuffix(".git") for p in (self.root / "mirrors").glob("*.git"))

    def lock(self, mirror: pathlib.Path) -> asyncio.Lock:
        """One lock per mirror for everything that changes its refs or its worktree list: a fetch walks
        every worktree's HEAD, so a worktree half added or half removed would break it."""
        return self._locks.setdefault(str(mirror), asyncio.Lock())

    async def sync_mirror(self, url: str, credentials: remotes.Credentials) -> pathlib.Path:
        """A bare repository per URL whose remote branches live under refs/remotes/origin/, fetched on
        every attempt under the mirror's lock. Its refs/heads/ holds only the attempts' gf/* branches,
        so a fetch (with --prune) never touches a branch that a running worktree has checked out."""
        remotes.check_url(url, allow_local=self.allow_local, credentials=credentials)
        path = self.mirror_path(url)
        none = remotes.Credentials()
        async with self.lock(path):
            fresh = not (path / "HEAD").exists()
            if fresh:
                shutil.rmtree(path, ignore_errors=True)
                await self._git(None, ["init", "-q", "--bare", str(path)], none, failure=("InfraError", "MirrorFailed"))
            # The config agents share through their worktrees is written anew before every fetch: what an
            # earlier agent put there (a url.*.insteadOf sending our token elsewhere, a filter driver, an
            # extension) is gone before credentials are in play.
            await asyncio.to_thread(_write_mirror_config, path, url)
            try:
                # The URL itself, not the remote's name: nothing in a config file decides where credentials go.
                await self._git(path, ["fetch", "-q", "--prune", "--tags", "--", url, "+refs/heads/*:refs/remotes/origin/*"],
                                credentials, failure=("InfraError", "FetchFailed"), network=True)
            except remotes.GitFailure as exc:
                if fresh:  # an empty mirror is no warm repo: the next attempt starts over
                    shutil.rmtree(path, ignore_errors=True)
                # Also on a warm mirror: a revoked token or a deleted repository is no infrastructure fault.
                raise remotes.classify_remote_error(exc.message, url=url) from None
        return path

    async def branch_exists(self, mirror: pathlib.Path, branch: str) -> bool:
        """Whether the remote had `branch` at the last fetch: checked before the agent runs, so an
        attempt that could never push does not run at all (the push itself is atomic on top)."""
        try:
            await self._git(mirror, ["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}"], remotes.Credentials(),
                            failure=("InfraError", "GitFailed"))
        except remotes.GitFailure:
            return False
        return True

    async def resolve_base(self, mirror: pathlib.Path, base_ref: str) -> str:
        """baseRef → a commit id: a branch of the remote, then a tag, then a commit id."""
        if not remotes.SAFE_REF.match(base_ref):
            raise remotes.GitFailure("Rejected", "BaseRefNotFound", f"baseRef {base_ref!r} is not a valid ref")
        for candidate in (f"refs/remotes/origin/{base_ref}", f"refs/tags/{base_ref}", base_ref):
            try:
                base = (await self._git(mirror, ["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], remotes.Credentials(),
                                        failure=("Rejected", "BaseRefNotFound"))).strip()
            except remotes.GitFailure:
                continue
            if base:
                return base
        raise remotes.GitFailure("Rejected", "BaseRefNotFound", f"baseRef {base_ref!r} does not exist in the repository")

    async def remote_tip(self, mirror: pathlib.Path, branch: str) -> str | None:
        """The commit the remote's `branch` pointed at in the last fetch, or None."""
        try:
            return (await self._git(mirror, ["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}^{{commit}}"],
                                    remotes.Credentials(), failure=("InfraError", "GitFailed"))).strip() or None
        except remotes.GitFailure:
            return None

    async def add_worktree(self, mirror: pathlib.Path, *, name: str, base_ref: str, branch: str | None = None) -> "Checkout":
        """A fresh worktree at baseRef for one attempt, with two git dirs for its files:

        - the agent's own, `<worktree>/.git`: a plain repository whose objects/info/alternates point at
          the mirror's objects (which the sandbox shows read-only), HEAD on `branch` at the base commit.
          Nothing of the mirror's metadata (config, hooks, refs) is in it, and the agent may write there
          whatever it likes: the runner reads it once, as a remote, after the agent is gone;
        - the runner's, `trusted/<name>.git` outside the worktree (the agent never sees it), with HEAD
          on gf/<name>: every later git step of the runner runs with GIT_DIR pinned to it."""
        base = await self.resolve_base(mirror, base_ref)
        none = remotes.Credentials()
        checkout = Checkout(name=name, path=self.root / "worktrees" / name, trusted=self.root / "trusted" / f"{name}.git",
                            mirror=mirror, base=base, branch=branch or f"{BRANCH_PREFIX}{name}")
        async with self.lock(mirror):
            # The base stays reachable in the mirror (a later fetch --prune may drop the branch it came
            # from, and a gc would then take its objects from under the attempt) until remove_worktree.
            await self._git(mirror, ["update-ref", f"{_ATTEMPT_REFS}{name}", base], none, failure=("InfraError", "WorktreeFailed"))
        await asyncio.to_thread(self._init_checkout, checkout)
        failure = ("InfraError", "WorktreeFailed")
        # The agent's repository, written by the runner before the agent runs: trusted until then.
        await self._git(None, ["update-ref", f"refs/heads/{checkout.branch}", base], none, failure=failure,
                        git_dir=checkout.agent_git)
        await self._git(None, ["reset", "-q", "--hard", base], none, failure=failure, git_dir=checkout.agent_git,
                        work_tree=checkout.path)
        await self._git(None, ["update-ref", f"refs/heads/{checkout.trusted_branch}", base], none, failure=failure,
                        git_dir=checkout.trusted)
        await self._git(None, ["read-tree", base], none, failure=failure, git_dir=checkout.trusted, work_tree=checkout.path)
        return checkout

    def _init_checkout(self, checkout: "Checkout") -> None:
        shutil.rmtree(checkout.path, ignore_errors=True)
        shutil.rmtree(checkout.trusted, ignore_errors=True)
        checkout.path.mkdir(parents=True)
        checkout.trusted.parent.mkdir(exist_ok=True)
        objects = str((checkout.mirror / "objects").resolve())
        _write_repo(checkout.agent_git, head=checkout.branch, alternates=objects, identity=True)
        _write_repo(checkout.trusted, head=checkout.trusted_branch, alternates=objects, identity=False)

    async def take_agent_work(self, checkout: "Checkout") -> str:
        """After the agent ended (its whole pid namespace with it): bring its commits into the trusted
        git dir and return the commit the attempt goes on from. The agent's repository is hostile: it
        is reduced to plain files first (no symlink, no config, hooks, alternates or redirection of the
        agent's choosing), then fetched from as a remote, the file transport allowed for that fetch
        only and every object checked (fsck). Its HEAD counts only if it descends from the base; with
        no usable repository left, the base does (the files the agent changed are still committed)."""
        failure = ("AgentFailed", "AgentGitInvalid")
        usable = await asyncio.to_thread(_disarm_agent_git, checkout)
        if not usable:
            head = checkout.base
        else:
            await self._git(None, ["-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true", "fetch", "-q",
                                   "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", "--",
                                   f"file://{checkout.agent_git}", f"+HEAD:{_AGENT_HEAD}"],
                            remotes.Credentials(), failure=failure, git_dir=checkout.trusted, extra_env={"GIT_ALLOW_PROTOCOL": "file"})
            head = (await self._git(None, ["rev-parse", "--verify", f"{_AGENT_HEAD}^{{commit}}"], remotes.Credentials(),
                                    failure=failure, git_dir=checkout.trusted)).strip()
            try:
                await self._git(None, ["merge-base", "--is-ancestor", checkout.base, head], remotes.Credentials(),
                                failure=failure, git_dir=checkout.trusted)
            except remotes.GitFailure:
                raise remotes.GitFailure("AgentFailed", "UnrelatedHistory",
                                 f"the agent's HEAD {head[:12]} does not descend from the base commit {checkout.base[:12]}") from None
        await self._git(None, ["update-ref", f"refs/heads/{checkout.trusted_branch}", head], remotes.Credentials(),
                        failure=("InfraError", "GitFailed"), git_dir=checkout.trusted)
        await self._git(None, ["read-tree", head], remotes.Credentials(), failure=("InfraError", "GitFailed"),
                        git_dir=checkout.trusted, work_tree=checkout.path)
        return head

    async def take_summary(self, checkout: "Checkout") -> str | None:
        """SUMMARY.md is the agent's note to the runner: read it, and keep it out of the change unless
        the agent committed it on purpose. Only a regular file directly in the worktree counts: no
        symlink (to /etc/shadow, to a token), no fifo to hang on; at most SUMMARY_BYTES are read."""
        text = await asyncio.to_thread(read_summary, checkout.path)
        if not os.path.lexists(checkout.path / "SUMMARY.md"):
            return text
        status = await self._git(None, ["status", "--porcelain", "--", "SUMMARY.md"], remotes.Credentials(),
                                 failure=("InfraError", "GitFailed"), git_dir=checkout.trusted, work_tree=checkout.path)
        if status.startswith("??"):  # a symlink or fifo left for the runner goes too
            (checkout.path / "SUMMARY.md").unlink(missing_ok=True)
        return text

    async def commit_leftovers(self, checkout: "Checkout", message: str) -> None:
        """Agents that edit without committing still get their work pushed. Committed with the trusted
        git dir: no config, hook, filter or fsmonitor the agent wrote takes part (a .gitattributes may
        name a filter, but only config defines one, and the only config is the runner's)."""
        none = remotes.Credentials()
        trusted = functools.partial(self._git, None, credentials=none, failure=("InfraError", "GitFailed"),
                                    git_dir=checkout.trusted, work_tree=checkout.path)
        if (await trusted(["status", "--porcelain"])).strip():
            await trusted(["add", "-A"])
            await trusted(["-c", "user.name=Gigafactory", "-c", "user.email=runner@gigafactory.invalid",
                           "commit", "-q", "--no-verify", "-m", message])

    async def push(self, checkout: "Checkout", *, url: str, branch: str, credentials: remotes.Credentials) -> None:
        """Push HEAD to a new branch; an existing branch on the remote is never overwritten, not even
        one created while the agent ran: an empty --force-with-lease expectation means "must not exist",
        and the remote checks it atomically (a plain push would fast-forward such a branch)."""
        remotes.check_ref(branch, what="branch")
        remotes.check_url(url, allow_local=self.allow_local, credentials=credentials)
        ref = f"refs/heads/{branch}"
        try:
            await self._git(None, ["push", "--no-verify", f"--force-with-lease={ref}:", "--", url, f"HEAD:{ref}"],
                            credentials, failure=("PushFailed", "PushRejected"), network=True, git_dir=checkout.trusted)
        except remotes.GitFailure as exc:
            raise remotes.classify_push_error(exc.message, branch=branch) from None

    async def describe(self, git_dir: pathlib.Path, base: str, head: str = "HEAD") -> dict[str, Any]:
        """The change from `base` to `head` (in an attempt's trusted git dir, or in a mirror with a commit
        id) for a report."""
        run_git = functools.partial(self._git, None, credentials=remotes.Credentials(), failure=("InfraError", "GitFailed"),
                                    git_dir=git_dir)
        head = (await run_git(["rev-parse", head])).strip()
        names = await run_git(["-c", "core.quotePath=false", "diff", "--no-ext-diff", "--no-textconv", "--name-only", base, head])
        numstat = await run_git(["diff", "--no-ext-diff", "--no-textconv", "--numstat", base, head])
        insertions = deletions = 0
        for line in numstat.splitlines():
            added, removed, _ = (line.split("\t", 2) + ["", ""])[:3]
            insertions += int(added) if added.isdigit() else 0
            deletions += int(removed) if removed.isdigit() else 0
        files = [n for n in names.splitlines() if n]
        # The report must fit in the job's status: at most 1000 paths and CHANGED_FILES_CHARS in all.
        listed: list[str] = []
        total = 0
        for name in files[:1000]:
            total += len(name)
            if total > CHANGED_FILES_CHARS:
                break
            listed.append(name)
        return {"commit": head, "baseCommit": base, "changedFiles": listed,
                "diffstat": {"filesChanged": len(files), "insertions": insertions, "deletions": deletions}}

    async def remove_worktree(self, mirror: pathlib.Path, name: str) -> None:
        """Remove one attempt's worktree, both its git dirs and its ref in the mirror (idempotent)."""
        def call() -> None:
            repo = git.Git(str(mirror))
            shutil.rmtree(self.root / "worktrees" / name, ignore_errors=True)
            shutil.rmtree(self.root / "trusted" / f"{name}.git", ignore_errors=True)
            with contextlib.suppress(git.GitCommandError):
                repo.execute(["git", "update-ref", "-d", f"{_ATTEMPT_REFS}{name}"], env=_PLAIN_ENV)

        async with self.lock(mirror):
            await asyncio.to_thread(call)

    def sweep(self, live: AbstractSet[str] = frozenset()) -> list[str]:
        """Remove every worktree, trusted git dir and attempt ref that belongs to no live attempt (and
        the gf/* branches and worktree entries mirrors had before attempts got git dirs of their own);
        returns what went."""
        removed: list[str] = []
        for path in (self.root / "worktrees").iterdir():
            if path.name not in live:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"worktree {path.name}")
        trusted = self.root / "trusted"
        for path in trusted.iterdir() if trusted.is_dir() else ():
            if path.name.removesuffix(".git") not in live:
                shutil.rmtree(path, ignore_errors=True)
        for mirror in (self.root / "mirrors").glob("*.git"):
            # A git killed with us leaves its lock files (no git of ours runs during the start-up sweep).
            for lock in [*mirror.glob("*.lock"), *mirror.glob("refs/**/*.lock"), *mirror.glob("worktrees/*/*.lock")]:
                lock.unlink(missing_ok=True)
            for admin in mirror.glob("worktrees/*"):
                shutil.rmtree(admin, ignore_errors=True)
            repo = git.Git(str(mirror))
            try:
                refs = repo.execute(["git", "for-each-ref", "--format=%(refname)", _ATTEMPT_REFS, f"refs/heads/{BRANCH_PREFIX}"],
                                    env=_PLAIN_ENV)
            except git.GitCommandError:
                continue
            for ref in refs.splitlines():
                name = ref.removeprefix(_ATTEMPT_REFS).removeprefix(f"refs/heads/{BRANCH_PREFIX}")
                if name not in live:
                    with contextlib.suppress(git.GitCommandError):
                        repo.execute(["git", "update-ref", "-d", ref], env=_PLAIN_ENV)
                        removed.append(f"ref {ref}")
        # Key files and task files of attempts that a crash interrupted.
        for leftover in [*self.root.glob("gf-ssh-*"), *self.root.glob("gf-task-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(f"temporary {leftover.name}")
        return removed


def _write_mirror_config(mirror: pathlib.Path, url: str) -> None:
    """The mirror's whole config, as the runner wants it (git config --file writes it quoted right)."""
    fresh = mirror / "config.gigafactory"
    fresh.unlink(missing_ok=True)
    env = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    # Worktrees share this config: agents that commit need an identity even in an image without a
    # ~/.gitconfig (a profile's env can set GIT_AUTHOR_NAME and friends instead).
    for key, value in (("core.repositoryformatversion", "0"), ("core.bare", "true"), ("remote.origin.url", url),
                       ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
                       ("user.name", "Gigafactory Agent"), ("user.email", "agent@gigafactory.invalid")):
        git.Git().execute(["git", "config", "--file", str(fresh), key, value], env=env)
    os.replace(fresh, mirror / "config")


def _write_config(path: pathlib.Path, values: tuple[tuple[str, str], ...]) -> None:
    fresh = path.with_name(path.name + ".gigafactory")
    fresh.unlink(missing_ok=True)
    env = {**_PLAIN_ENV, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key, value in values:
        git.Git().execute(["git", "config", "--file", str(fresh), key, value], env=env)
    os.replace(fresh, path)


def _repo_config(*, identity: bool) -> tuple[tuple[str, str], ...]:
    values = (("core.repositoryformatversion", "0"), ("core.bare", "false"), ("core.logallrefupdates", "true"))
    # Agents that commit need an identity even in an image without a ~/.gitconfig (a profile's env
    # can set GIT_AUTHOR_NAME and friends instead).
    return values + ((("user.name", "Gigafactory Agent"), ("user.email", "agent@gigafactory.invalid")) if identity else ())


def _write_repo(git_dir: pathlib.Path, *, head: str, alternates: str, identity: bool) -> None:
    """A repository written by hand (no `git init`: no template, no sample hooks), borrowing `alternates`."""
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (git_dir / sub).mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{head}\n")
    (git_dir / "objects" / "info" / "alternates").write_text(alternates + "\n")
    _write_config(git_dir / "config", _repo_config(identity=identity))


def _disarm_agent_git(checkout: Checkout) -> bool:
    """Make the agent's git dir safe to fetch from, once the agent is gone; False if it has none.

    Its config, alternates and every file that redirects git elsewhere are the runner's again or
    gone; a symlink or special file anywhere in it (a packed-refs or a pack pointing at another
    repository the runner can read) refuses the attempt."""
    git_dir = checkout.agent_git
    try:
        if not stat.S_ISDIR(os.lstat(git_dir).st_mode):
            return False  # a `.git` file or symlink: no repository of the agent's counts
    except FileNotFoundError:
        return False
    for name in _AGENT_GIT_TREES:
        shutil.rmtree(git_dir / name, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(git_dir):  # never follows symlinks
        for entry in (*dirnames, *filenames):
            path = pathlib.Path(dirpath) / entry
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "a special file"
                raise remotes.GitFailure("AgentFailed", "AgentGitInvalid",
                                 f"the agent's .git holds {kind} ({path.relative_to(git_dir)}): not fetching from it")
    for name in _AGENT_GIT_REDIRECTS:
        (git_dir / name).unlink(missing_ok=True)
    (git_dir / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(str(checkout.objects.resolve()) + "\n")
    _write_config(git_dir / "config", _repo_config(identity=False))
    return True


def read_summary(worktree: pathlib.Path) -> str | None:
    """SUMMARY.md if it is a regular file directly in `worktree` (opened without following a symlink,
    neither the file nor the worktree itself), at most SUMMARY_BYTES of it; else None."""
    try:
        directory = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fd = os.open("SUMMARY.md", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=directory)
    except OSError:
        return None  # absent, a symlink (ELOOP), a fifo without writer (ENXIO)...
    finally:
        os.close(directory)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(SUMMARY_BYTES)
    return data.decode("utf-8", errors="replace")[:8000]


def clean_env() -> dict[str, str]:
    """The runner's environment minus anything git-related, for the agent process."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GIGAFACTORY_", "SSH_"))}
