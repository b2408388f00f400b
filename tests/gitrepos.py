"""Real git repositories for tests: a source repository with one commit, pushed to a bare remote."""

import pathlib

import git


def make_remote(root: pathlib.Path, *, files: dict[str, str] | None = None, name: str = "remote.git") -> pathlib.Path:
    """A bare repository at root/name whose main branch holds `files` in one commit."""
    work = root / f"{name}-src"
    repo = git.Repo.init(work, initial_branch="main")
    for path, text in (files or {"README.md": "hello\n"}).items():
        (work / path).write_text(text)
        repo.index.add([path])
    actor = git.Actor("t", "t@example.invalid")
    repo.index.commit("init", author=actor, committer=actor)
    bare = root / name
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo.create_remote("origin", str(bare)).push("main:main")
    return bare


def commit_file(workdir: pathlib.Path, name: str) -> None:
    """What an agent does: write <name>.txt in the worktree and commit it with message <name>."""
    (workdir / f"{name}.txt").write_text(name + "\n")
    repo = git.Repo(workdir)
    repo.index.add([f"{name}.txt"])
    actor = git.Actor("agent", "agent@example.invalid")
    repo.index.commit(name, author=actor, committer=actor)
