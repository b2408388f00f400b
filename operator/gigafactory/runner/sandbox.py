"""The agent sandbox: an agent runs in its own Linux namespaces and sees only what its attempt grants.

Namespaces: user, mount, pid, ipc, uts (and net when the pool says so). The agent's root is a fresh
read-only tmpfs holding read-only binds of the system directories a program needs (/usr, /bin, /lib*,
a few files of /etc), of the Python the runner runs on (its prefix, venv and sys.path, so that
`{python} -m ...` profiles work), its worktree read-write, its prompt file read-only, the objects of
its repository's mirror read-only, a private /tmp and $HOME, a fresh /proc of its pid namespace and
a minimal /dev. The runner's work dir (mirrors' metadata, other worktrees, askpass, key files, pid
files), the ServiceAccount token and everything else of the pod are simply not there.

Why a launcher of our own rather than bubblewrap: bwrap is not in the runner image nor on CI, and
what it would do for us is a few system calls that ctypes reaches in Python 3.11 (which has no
os.unshare). When a runner image ships bwrap, nothing here needs it.

This file is also the launcher itself, run as `python -I <this file> --spec-fd N` (stdlib only, so
that no module of the repository under work, nor the job's environment, can take part in it):

    runner ── launcher (new user ns; unshare mount/pid/ipc/uts) ── init (pid 1: builds the root,
                                                                     drops every capability)
                                                                     └── agent (pid 2, exec'd)

The launcher leads the process group the runner signals (timeout, stop, kill_orphans after a crash);
init and agent are in that group too. init forwards SIGTERM to the agent and exits with the agent's
status; when init goes (agent ended, init killed, launcher killed: init has a parent-death signal),
the kernel kills every process left in the pid namespace, including those that left the group.
The spec (argv, environment, mounts) arrives on a memfd, never in argv where `ps` would show the
agent's environment to anyone on the node.
"""

import ctypes
import dataclasses
import errno
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

MODES = ("namespaces", "none")

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_STRICTATIME = 1 << 24
_MNT_DETACH = 2
# statvfs f_flag bits → the mount flags a read-only remount of a bind must keep (the kernel refuses,
# in a user namespace, to drop nosuid/nodev/noexec/atime flags the original mount has).
_KEPT_FLAGS = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC),
               (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21))

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS, NO_CAP_AMBIENT_RAISE and each one's lock: uid 0 inside means nothing.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40 | 0x80
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

# What every program needs from the system, read-only (those that exist on this machine).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives", "/etc/ssl",
               "/etc/ca-certificates", "/etc/pki", "/etc/ld.so.conf.d")
SYSTEM_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/localtime",
                "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/services",
                "/etc/protocols", "/etc/mime.types", "/etc/os-release", "/etc/ca-certificates.conf")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
HOSTNAME = "gigafactory-agent"
# Exit codes of the launcher itself, each with a last line of output starting with "sandbox[<nonce>]: ",
# a nonce of that start only (the agent cannot read it), so an agent cannot pass its own failure off as ours.
SETUP_FAILED = 126
EXEC_FAILED = 127
DEFAULT_HOME = "/home/agent"


class SandboxError(Exception):
    """The sandbox cannot be built here (no user namespaces, a mount refused): one line saying why."""


@dataclasses.dataclass(frozen=True)
class Command:
    """What to hand to executing.run: argv, environment and the fds the child must inherit."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    nonce: str = ""  # marks the launcher's own failure lines (see failure())

    def close(self) -> None:
        for fd in self.pass_fds:
            try:
                os.close(fd)
            except OSError:
                pass


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How a runner starts agents. `none` runs them as the runner's own user with the runner's files
    (a pool that opted out, loudly); `namespaces` is the default."""

    mode: str = "namespaces"
    network: bool = True  # agents call model APIs: the pod's network stays shared unless a pool says otherwise
    read_only: tuple[str, ...] = ()  # extra paths an agent may read (an agent's install dir outside /usr)

    def command(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, writable: Sequence[str] = (),
                readable: Sequence[str] = (), hidden: Sequence[str] = ()) -> Command:
        """argv (with env, in cwd) wrapped so that it sees only `writable` (read-write), `readable`
        and the system read-only; nothing under a `hidden` path is ever bound (the runner's work dir)."""
        if self.mode == "none":
            return Command(list(argv), dict(env))
        home = env.get("HOME") or DEFAULT_HOME
        if home in ("/", "") or not home.startswith("/"):
            home = DEFAULT_HOME
        spec: dict[str, Any] = {
            "argv": list(argv), "env": {**env, "HOME": home, "TMPDIR": "/tmp"}, "cwd": cwd, "home": home,
            "network": self.network, "uid": os.getuid(), "gid": os.getgid(),
            "ro": _readable_paths(self.read_only, hidden=hidden) + [os.path.abspath(p) for p in readable],
            "rw": [os.path.abspath(p) for p in writable], "nonce": secrets.token_hex(8),
        }
        fd = os.memfd_create("gigafactory-sandbox-spec", os.MFD_CLOEXEC)  # inherited only where passed
        os.write(fd, json.dumps(spec).encode())
        os.lseek(fd, 0, os.SEEK_SET)
        launcher = [sys.executable, "-I", os.path.abspath(__file__), "--spec-fd", str(fd)]
        return Command(launcher, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, (fd,), spec["nonce"])

    def check(self) -> float:
        """Start `true` in a sandbox; returns the seconds it took. SandboxError (one line) if it cannot."""
        if self.mode == "none":
            return 0.0
        started = time.monotonic()
        command = self.command(["true"], env={"PATH": "/usr/bin:/bin"}, cwd="/")
        try:
            done = subprocess.run(command.argv, env=command.env, pass_fds=command.pass_fds, capture_output=True,
                                  timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"cannot start the sandbox launcher: {exc}") from None
        finally:
            command.close()
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            last = said[-1].replace(f"sandbox[{command.nonce}]: ", "") if said else ""
            raise SandboxError(last or f"the sandbox launcher exited with {done.returncode}")
        return time.monotonic() - started


def failure(command: Command, exit_code: int | None, output: str) -> str | None:
    """Whether an agent's end was the launcher's: "setup" (the sandbox could not be built), "exec"
    (the agent's command could not be started in it), or None (the agent ran)."""
    lines = output.strip().splitlines()
    if not command.nonce or not lines or not lines[-1].startswith(f"sandbox[{command.nonce}]: "):
        return None
    return {SETUP_FAILED: "setup", EXEC_FAILED: "exec"}.get(exit_code or 0)


def _readable_paths(extra: Sequence[str], *, hidden: Sequence[str]) -> list[str]:
    """The read-only binds: system paths, the Python prefix and sys.path, then `extra`; none under a
    hidden path (nor one that holds it: binding / or the work dir's parent would show the work dir)."""
    python = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(__file__)),
              *[p for p in sys.path if p]]
    candidates = [*SYSTEM_DIRS, *SYSTEM_FILES, *python, *extra]
    hidden_real = [os.path.realpath(h) for h in hidden] + ["/var/run/secrets", "/run/secrets"]
    chosen: list[str] = []
    for path in candidates:
        path = os.path.abspath(path)
        if path == "/" or not os.path.lexists(path) or path in chosen:
            continue
        real = os.path.realpath(path)
        if any(_within(real, h) or _within(h, real) for h in hidden_real):
            continue
        chosen.append(path)
    return chosen


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# --- the launcher (runs in its own process, stdlib only) ---


def _say(spec: dict[str, Any], text: str) -> None:
    print(f"sandbox[{spec.get('nonce', '')}]: {text}", file=sys.stderr, flush=True)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(code)} (errno {errno.errorcode.get(code, code)})")
    return result


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None), f"mount {source or fstype} on {target}")


def _bind(libc: ctypes.CDLL, source: str, target: str, *, writable: bool) -> None:
    """Bind source at target (created in the new root); read-only unless writable. Symlinks are
    recreated as symlinks (/lib → usr/lib on merged-/usr systems), never followed out of the root."""
    if os.path.islink(source) and not os.path.isdir(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            with open(target, "a"):
                pass
    _mount(libc, source, target, None, _MS_BIND)
    # Remounted nosuid, and read-only unless writable; the flags the original mount has stay (the
    # kernel refuses, in a user namespace, to clear nodev/noexec/atime flags of a mount it locked).
    flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | (0 if writable else _MS_RDONLY)
    kept = os.statvfs(target).f_flag
    for st_flag, ms_flag in _KEPT_FLAGS:
        if kept & st_flag:
            flags |= ms_flag
    _mount(libc, None, target, None, flags)


def _build_root(libc: ctypes.CDLL, spec: dict[str, Any]) -> None:
    """In the new mount namespace (as pid 1 of the new pid namespace): the agent's whole filesystem."""
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    # A base tmpfs to pivot into, so that the host's root stays reachable (as /oldroot) while the
    # agent's root is filled; /tmp of this namespace only (the host's /tmp stays under /oldroot/tmp).
    _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    os.chdir("/tmp")
    os.mkdir("newroot")
    os.mkdir("oldroot")
    syscall = _SYS_PIVOT_ROOT.get(platform.machine())
    if syscall is None:
        raise SandboxError(f"no pivot_root system call number known for {platform.machine()}")
    _check(libc.syscall(syscall, b".", b"oldroot"), "pivot_root")
    os.chdir("/")
    _mount(libc, "tmpfs", "/newroot", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    new = "/newroot"

    def inside(path: str) -> str:
        return new + path

    # Private, writable, empty: /tmp and $HOME. They come first: a bind below them (a worktree under
    # /tmp in tests, the Python of pyenv under /root) is laid on top.
    for path in ("/tmp", spec["home"]):
        os.makedirs(inside(path), exist_ok=True)
        _mount(libc, "tmpfs", inside(path), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0700")
    binds = [(p, False) for p in spec["ro"]] + [(p, True) for p in spec["rw"]]
    # Shallow paths first, so that a deeper bind lands on top of its parent's, not under it.
    for path, writable in sorted(binds, key=lambda item: (item[0].count("/"), item[0])):
        source = "/oldroot" + path
        if not os.path.lexists(source):
            continue
        _bind(libc, source, inside(path), writable=writable)
    # /dev: a few devices, bound from the host's (a user namespace may not create device nodes).
    os.makedirs(inside("/dev"), exist_ok=True)
    _mount(libc, "tmpfs", inside("/dev"), "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=0755")
    for name in DEVICES:
        if os.path.exists(f"/oldroot/dev/{name}"):
            _bind(libc, f"/oldroot/dev/{name}", inside(f"/dev/{name}"), writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, inside(f"/dev/{name}"))
    os.mkdir(inside("/dev/shm"))
    _mount(libc, "tmpfs", inside("/dev/shm"), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
    # /proc of the agent's own pid namespace: it shows the agent's processes only.
    os.makedirs(inside("/proc"), exist_ok=True)
    _mount(libc, "proc", inside("/proc"), "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    # Into the new root; the old one (the host's, and the base tmpfs) goes, lazily detached.
    os.chdir(new)
    _check(libc.syscall(_SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root into the agent's root")
    _check(libc.umount2(b".", _MNT_DETACH), "detach the host's root")
    os.chdir("/")
    _mount(libc, None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _drop_privileges(libc: ctypes.CDLL) -> None:
    """No capability left (not even in the agent's own user namespace, where it is uid 0 when the
    runner is root), none to be had back through exec (no_new_privs, empty bounding set), and not
    dumpable, so the agent cannot ptrace its init."""
    _check(libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0), "set securebits")
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two Data structs
    _check(libc.capset(ctypes.byref(header), (Data * 2)()), "drop capabilities")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _init(libc: ctypes.CDLL, spec: dict[str, Any]) -> int:
    """pid 1 of the agent's pid namespace: build the root, drop privileges, run the agent, reap, and
    exit with the agent's status (which ends every process still in the namespace)."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    outer_pid = os.readlink("/proc/self")  # this process as the runner's pid namespace sees it
    _build_root(libc, spec)
    libc.sethostname(HOSTNAME.encode(), len(HOSTNAME))
    _drop_privileges(libc)
    env = {**spec["env"], "GIGAFACTORY_SANDBOX_PID": outer_pid}
    # init's cwd is the agent's too: whoever looks at /proc/<GIGAFACTORY_SANDBOX_PID>/cwd sees the worktree.
    os.chdir(spec["cwd"])
    agent = os.fork()
    if agent == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.execvpe(spec["argv"][0], spec["argv"], env)
        except OSError as exc:
            _say(spec, f"cannot start {spec['argv'][0]}: {exc.strerror}")
        os._exit(EXEC_FAILED)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(agent, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == agent:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def launch(spec: dict[str, Any]) -> int:
    """The launcher: a user namespace mapping only our own uid and gid, the other namespaces, then
    init inside them. Returns the agent's exit code (126 when the sandbox could not be built)."""
    libc = _libc()
    uid, gid = spec["uid"], spec["gid"]
    _check(libc.unshare(_CLONE_NEWUSER), "unshare a user namespace (does this node allow unprivileged user namespaces?)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS | (0 if spec["network"] else _CLONE_NEWNET)
    _check(libc.unshare(flags), "unshare mount, pid, ipc and uts namespaces")
    child = os.fork()
    if child == 0:
        try:
            code = _init(libc, spec)
        except (SandboxError, OSError) as exc:
            _say(spec, str(exc))
            code = SETUP_FAILED
        os._exit(code)
    # The group's signals reach the agent directly; the launcher outlives them to report its status.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "--spec-fd":
        print("usage: python -I sandbox.py --spec-fd N", file=sys.stderr)
        return 2
    fd = int(argv[1])
    with os.fdopen(fd, "rb") as handle:
        spec = json.loads(handle.read())
    try:
        return launch(spec)
    except (SandboxError, OSError) as exc:
        _say(spec, str(exc))
        return SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
