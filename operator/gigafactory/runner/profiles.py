"""Agent profiles: name → argv template, env, timeout, and what a job may add. Loaded from YAML; rendered
without a shell.

A job steers its agent only through what its profile allows (`allow.args`, `allow.env`): anything else
in `spec.agent.args` or `spec.agent.env` is refused before the agent starts. The command itself is
fixed when the file is loaded: argv[0] is resolved to an absolute path with the runner's own PATH, and
`{python}` is this interpreter in isolated mode (`-I`: no PYTHON* variables, neither the working
directory nor the script's directory on sys.path, no user site-packages), so neither the job's
environment nor the repository's files choose what runs.
"""

import os
import pathlib
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal

import pydantic
import yaml

from gigafactory import constants
from gigafactory.models import agentjobs

DEFAULT_FILE = pathlib.Path(__file__).with_name("profiles.yaml")

ARGS_SLOT = "{args}"  # an argv entry that marks where the job's arguments go (default: at the end)
PYTHON = "{python}"
# `{python}` as a whole argv entry: the runner's interpreter, isolated from the environment and the
# working directory (a repository's own `gigafactory/` package must never be what `-m` imports).
PYTHON_ISOLATED = ("-I",)
FLAG_PATTERN = r"^--?[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\*?$"
# Regular-expression syntax Python's re has and RE2 (the API server's CEL `matches`) lacks: a pattern
# must mean the same to the runner and to the chart's admission policy.
_NOT_RE2 = re.compile(r"\(\?[=!]|\(\?<[=!]|\(\?P=|\\[1-9]|\(\?\(")


class NotAllowed(Exception):
    """A job asks for something its profile does not allow: reason ArgNotAllowed or EnvNotAllowed."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.reason, self.field = reason, field
        self.message = f"{field}: {message}"


class ArgRule(pydantic.BaseModel):
    """One flag a job may add: exactly this token, followed by one value matching `value` when set."""

    model_config = pydantic.ConfigDict(extra="forbid")

    flag: Annotated[str, pydantic.Field(pattern=FLAG_PATTERN)]
    value: str | None = None  # a regular expression the whole value must match (RE2 syntax); None: a switch

    @pydantic.field_validator("value")
    @classmethod
    def _portable_pattern(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if _NOT_RE2.search(value):
            raise ValueError("lookarounds, backreferences and conditionals are not RE2: the admission policy could not check it")
        try:
            re.compile(value, flags=re.ASCII)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def describe(self) -> str:
        return self.flag if self.value is None else f"{self.flag} <{self.value}>"


class Allow(pydantic.BaseModel):
    """What a job may add to a profile. The default allows nothing."""

    model_config = pydantic.ConfigDict(extra="forbid")

    args: list[ArgRule] = []
    # Exact names, or a prefix ending in `*` (e.g. AIDER_MODEL, MYTOOL_*); never a reserved name.
    env: list[Annotated[str, pydantic.Field(pattern=ENV_PATTERN)]] = []

    @pydantic.field_validator("env")
    @classmethod
    def _not_reserved(cls, names: list[str]) -> list[str]:
        for name in names:
            stem = name.rstrip("*")
            if agentjobs.reserved_env_name(stem) or (name.endswith("*") and _prefix_reaches_reserved(stem)):
                raise ValueError(f"{name} is reserved: no profile may let a job set it (docs/security.md#job-inputs)")
        return names

    @pydantic.field_validator("args")
    @classmethod
    def _unique(cls, rules: list[ArgRule]) -> list[ArgRule]:
        flags = [r.flag for r in rules]
        if len(flags) != len(set(flags)):
            raise ValueError("a flag is listed twice")
        return rules


def _prefix_reaches_reserved(prefix: str) -> bool:
    """Whether names starting with prefix include reserved ones (e.g. `P*` reaches PATH and PYTHON*)."""
    return any(name.startswith(prefix) for name in constants.RESERVED_ENV_NAMES) or any(
        reserved.startswith(prefix) or prefix.startswith(reserved) for reserved in constants.RESERVED_ENV_PREFIXES)


def _overrides(own: str, added: str) -> bool:
    """Whether a job's flag `added` could be read as the profile's own flag `own`: the same flag, an
    abbreviation of it (argparse and getopt_long accept unique prefixes), or a short flag with its value
    attached (`-pX`)."""
    if own == added:
        return True
    if own.startswith("--") and added.startswith("--") and own.startswith(added):
        return True
    return len(own) == 2 and own[0] == "-" and own[1] != "-" and added.startswith(own)


class Profile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True, extra="forbid")

    argv: Annotated[list[str], pydantic.Field(min_length=1)]
    env: dict[str, str] = {}
    timeout_seconds: Annotated[int, pydantic.Field(alias="timeoutSeconds", ge=1)] = 3600
    stdin: Literal["none", "prompt"] = "none"
    allow: Allow = Allow()

    # argv[0] as resolved at load time with the runner's PATH (never the job's); None: not installed.
    _command: str | None = pydantic.PrivateAttr(default=None)

    @pydantic.model_validator(mode="after")
    def _checked(self) -> "Profile":
        if self.argv[0] == ARGS_SLOT:
            raise ValueError("argv[0] must be the command, not {args}")
        if self.argv.count(ARGS_SLOT) > 1:
            raise ValueError("{args} may appear once")
        own = [part for part in self.argv if part.startswith("-") and part not in ("-", "--")]
        for rule in self.allow.args:
            for flag in own:
                if _overrides(flag, rule.flag):
                    raise ValueError(f"allow.args: {rule.flag} could override the profile's own {flag}")
        return self

    def model_post_init(self, context: object, /) -> None:
        self._command = _resolve(self.argv[0])

    def render(self, *, prompt_file: pathlib.Path, workdir: pathlib.Path, job: str, branch: str,
               extra_args: Sequence[str] = ()) -> list[str]:
        """The command line: absolute argv[0], templates filled in, the job's (checked) arguments at `{args}`."""
        values = {"python": sys.executable, "prompt_file": str(prompt_file), "workdir": str(workdir),
                  "job": job, "branch": branch}
        if self._command is None:
            raise FileNotFoundError(f"{self.argv[0]}: not installed on this runner")
        argv = [self._command, *(PYTHON_ISOLATED if self.argv[0] == PYTHON else ())]
        placed = False
        for part in self.argv[1:]:
            if part == ARGS_SLOT:
                argv += extra_args
                placed = True
            elif part == PYTHON:
                argv += [sys.executable, *PYTHON_ISOLATED]
            else:
                # Each template is one argument: str.format cannot split it, and no shell ever sees it.
                argv.append(part.format_map(values))
        return argv if placed else argv + list(extra_args)

    def installed(self) -> bool:
        """Whether the command exists here: a runner announces only profiles it can start."""
        return self._command is not None

    def check_args(self, args: Sequence[str], *, field: str = "spec.agent.args") -> None:
        """Raise NotAllowed unless every argument is a flag of allow.args, each value flag followed by
        a value its pattern matches in full (and that cannot be read as an option)."""
        rules = {rule.flag: rule for rule in self.allow.args}
        index = 0
        while index < len(args):
            token = args[index]
            rule = rules.get(token)
            if rule is None:
                raise NotAllowed("ArgNotAllowed", f"{field}[{index}]",
                                 f"{_show(token)} is not an argument this profile allows ({self._allowed_args()})")
            if rule.value is not None:
                if index + 1 >= len(args):
                    raise NotAllowed("ArgNotAllowed", f"{field}[{index}]", f"{token} needs a value matching {rule.value}")
                value = args[index + 1]
                # ASCII classes (\d, \w, \s) as in RE2, so that the admission policy and the runner agree.
                if value.startswith("-") or re.fullmatch(rule.value, value, flags=re.ASCII) is None:
                    raise NotAllowed("ArgNotAllowed", f"{field}[{index + 1}]",
                                     f"{_show(value)} is not a value this profile allows for {token} (it must match {rule.value})")
                index += 1
            index += 1

    def check_env(self, names: Iterable[str], *, field: str = "spec.agent.env") -> None:
        """Raise NotAllowed unless every name is one allow.env lists (and none is reserved)."""
        for index, name in enumerate(names):
            if agentjobs.reserved_env_name(name) or not any(
                    name == allowed or (allowed.endswith("*") and name.startswith(allowed[:-1])) for allowed in self.allow.env):
                raise NotAllowed("EnvNotAllowed", f"{field}[{index}].name",
                                 f"{_show(name)} is not an env name this profile allows ({', '.join(self.allow.env) or 'none'})")

    def _allowed_args(self) -> str:
        return ", ".join(rule.describe() for rule in self.allow.args) or "none"


def _show(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit] + "…"


def _resolve(command: str) -> str | None:
    """argv[0] as an absolute path, looked up with the runner's own PATH: never the job's, never the worktree."""
    if command == PYTHON:
        return sys.executable
    if "{" in command:
        return None
    found = shutil.which(command, path=os.environ.get("PATH", os.defpath))
    return os.path.abspath(found) if found else None


class ProfilesFile(pydantic.BaseModel):
    profiles: dict[str, Profile]


def load(path: str | pathlib.Path | None = None) -> Mapping[str, Profile]:
    """The profiles of a file (default: the shipped one). Raises ValueError with the file's problem."""
    source = pathlib.Path(path) if path else DEFAULT_FILE
    try:
        data = yaml.safe_load(source.read_text())
        return ProfilesFile.model_validate(data).profiles
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"cannot load agent profiles from {source}: {where}: {first['msg']}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot load agent profiles from {source}: {exc}") from None
