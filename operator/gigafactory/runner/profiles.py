"""Agent profiles: name → argv template, env, timeout. Loaded from YAML; rendered without a shell."""

import pathlib
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import pydantic
import yaml

DEFAULT_FILE = pathlib.Path(__file__).with_name("profiles.yaml")


class Profile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True, extra="forbid")

    argv: Annotated[list[str], pydantic.Field(min_length=1)]
    env: dict[str, str] = {}
    timeout_seconds: Annotated[int, pydantic.Field(alias="timeoutSeconds", ge=1)] = 3600
    stdin: Literal["none", "prompt"] = "none"

    def render(self, *, prompt_file: pathlib.Path, workdir: pathlib.Path, job: str, branch: str,
               extra_args: Sequence[str] = ()) -> list[str]:
        values = {"python": sys.executable, "prompt_file": str(prompt_file), "workdir": str(workdir),
                  "job": job, "branch": branch}
        # Each template is one argument: str.format cannot split it, and no shell ever sees it.
        return [part.format_map(values) for part in self.argv] + list(extra_args)


    def installed(self) -> bool:
        """Whether the command exists here: a runner announces only profiles it can start."""
        try:
            command = self.argv[0].format_map({"python": sys.executable})
        except (KeyError, ValueError, IndexError):
            return False
        return shutil.which(command) is not None


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
