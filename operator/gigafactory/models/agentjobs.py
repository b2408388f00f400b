"""The AgentJob resource: one unit of work for a coding agent, its spec and its status.

A product team writes the spec; the operator and the runner write the status. Everything the
schema can check is checked here (and so at the API server); what it cannot, the operator checks
and fails the job with reason InvalidSpec.
"""

import datetime
import enum
from typing import Annotated, Any

import pydantic

from gigafactory import constants
from gigafactory.models import common, factories
from gigafactory.models.common import X_LIST_MAP_KEYS, X_LIST_TYPE, X_VALIDATIONS, rule
from gigafactory.models.spending import AgentLimits as AgentLimits  # re-exported: agentjobs.AgentLimits
from gigafactory.models.spending import TokensPerModel

# Characters a branch or ref may hold here: a safe subset of what `git check-ref-format` allows,
# starting with a letter or digit so that it can never be read as a command-line option.
GIT_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"


def git_ref_rules(what: str) -> list[pydantic.JsonValue]:
    """CEL rules for the parts of git's ref-name rules that a character class cannot express."""
    return [
        rule("!self.startsWith('-')", f"{what} must not start with '-': git would read it as an option"),
        rule("!self.contains('..')", f"{what} must not contain '..'"),
        rule("!self.contains('//') && !self.contains('/.')", f"{what} must not contain '//' or a component starting with '.'"),
        rule(
            "!self.endsWith('/') && !self.endsWith('.') && !self.endsWith('.lock')",
            f"{what} must not end with '/', '.' or '.lock'",
        ),
    ]


class Phase(str, enum.Enum):
    """Where a job is in its life. The last three are terminal."""

    PENDING = "Pending"
    BOUND = "Bound"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class Outcome(str, enum.Enum):
    """How one attempt ended: the class the retry policy decides on."""

    SUCCEEDED = "Succeeded"
    AGENT_FAILED = "AgentFailed"  # the agent exited non-zero; exitCode says how
    TIMED_OUT = "TimedOut"  # the agent profile's timeout killed it
    PUSH_FAILED = "PushFailed"  # the agent worked but the branch could not be pushed
    INFRA_ERROR = "InfraError"  # the runner died, the lease expired, no claim came, git fetch failed...
    REJECTED = "Rejected"  # the runner refused the job for a reason a retry cannot fix (missing Secret, ...)
    STOPPED = "Stopped"  # the operator stopped it: cancel, suspend, deadline, drain


class RetryAction(str, enum.Enum):
    """What a retry rule does with a matching attempt (after the Job API's podFailurePolicy)."""

    FAIL_JOB = "FailJob"  # fail the job now, whatever attempts are left
    COUNT = "Count"  # retry, and count the attempt against maxAttempts
    IGNORE = "Ignore"  # retry without counting against maxAttempts (bounded by maxUncountedRetries)


class DeleteBranchPolicy(str, enum.Enum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    ALWAYS = "Always"


class RepoSpec(common.Model):
    """The git repository the agent works on."""

    url: Annotated[
        str,
        pydantic.Field(
            min_length=1,
            max_length=2048,
            pattern=r"^\S+$",
            description=(
                "Clone URL: https://, http://, ssh://, git:// or scp-like user@host:path. "
                "file:// URLs and absolute local paths are accepted by the schema but refused by a runner "
                "unless its settings allow local repositories (dev mode and tests do). Remote helpers "
                "(transport::address, such as ext::) are always refused."
            ),
            json_schema_extra={
                X_VALIDATIONS: [
                    rule("!self.startsWith('-')", "url must not start with '-': git would read it as an option"),
                    rule(
                        "!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://([^/@]*@)?-')",
                        "url's user or host must not start with '-': ssh would read it as an option",
                    ),
                    rule(
                        "!self.matches('^[A-Za-z0-9+.-]+::')",
                        "url must not name a git remote helper (transport::address, such as ext::)",
                    ),
                    rule(
                        "self.matches('^(https?|ssh|git|file)://') || self.matches('^[A-Za-z0-9._-]+@[^:/]+:') "
                        "|| self.startsWith('/')",
                        "url must be an https://, http://, ssh://, git:// or file:// URL, "
                        "an scp-like user@host:path, or an absolute local path",
                    ),
                ]
            },
        ),
    ]
    base_ref: Annotated[
        str,
        pydantic.Field(
            min_length=1,
            max_length=255,
            pattern=GIT_REF_PATTERN,
            description="The branch, tag or commit the agent starts from.",
            json_schema_extra={X_VALIDATIONS: git_ref_rules("baseRef")},
        ),
    ] = "main"
    branch: Annotated[
        str | None,
        pydantic.Field(
            min_length=1,
            max_length=255,
            pattern=GIT_REF_PATTERN,
            description=(
                "The branch the result is pushed to. Default: agent/<job name>. "
                "A runner refuses to push to a branch that already exists on the remote."
            ),
            json_schema_extra={X_VALIDATIONS: git_ref_rules("branch")},
        ),
    ] = None
    credentials_secret: Annotated[
        common.ObjectName | None,
        pydantic.Field(
            description=(
                "A Secret in the job's namespace with git credentials: key `token` (HTTPS, optionally with "
                "`username`) or `ssh-privatekey` (optionally with `known_hosts`). Never put secrets inline. "
                "Used only by its owner's consent: the job's author must be allowed to get it (checked at admission), "
                "and it must be labelled gigafactory.dev/credentials=true and name the URL's host in its annotation "
                "gigafactory.dev/allowed-hosts (comma-separated); else the attempt is Rejected (SecretNotForGigafactory, "
                "HostNotAllowed) before any connection."
            ),
        ),
    ] = None


class ConfigMapKeyRef(common.Model):
    name: Annotated[common.ObjectName, pydantic.Field(
        description="A ConfigMap in the job's namespace that the job's author may get (checked at admission).")]
    key: Annotated[str, pydantic.Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key holding the text.")]


class PromptSource(common.Model):
    config_map_key_ref: Annotated[ConfigMapKeyRef, pydantic.Field(description="Read the prompt from this ConfigMap key.")]


class TaskSpec(common.Model):
    """What the agent is asked to do: exactly one of prompt and promptFrom."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            X_VALIDATIONS: [rule("has(self.prompt) != has(self.promptFrom)", "exactly one of prompt and promptFrom must be set")]
        }
    )

    prompt: Annotated[
        str | None,
        pydantic.Field(min_length=1, max_length=262144, description="The task, in words (at most 256 KiB; use promptFrom for more)."),
    ] = None
    prompt_from: Annotated[PromptSource | None, pydantic.Field(description="Read the task from a ConfigMap instead.")] = None

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> "TaskSpec":
        if (self.prompt is None) == (self.prompt_from is None):
            raise ValueError("exactly one of prompt and promptFrom must be set")
        return self


def reserved_env_name(name: str) -> bool:
    """Whether a job may never set this env name, whatever its agent profile allows."""
    return name.startswith(constants.RESERVED_ENV_PREFIXES) or name in constants.RESERVED_ENV_NAMES


def _env_name_rule() -> pydantic.JsonValue:
    prefixes = " && ".join(f"!self.name.startsWith('{p}')" for p in constants.RESERVED_ENV_PREFIXES)
    names = ", ".join(f"'{n}'" for n in constants.RESERVED_ENV_NAMES)
    return rule(f"{prefixes} && !(self.name in [{names}])",
                "env name is reserved: the runner sets it, or it changes which program runs, what it loads or where it "
                "connects (PATH, HOME, LD_*, PYTHON*, NODE_*, BASH_ENV, GIT_*, proxies...: docs/security.md#job-inputs)")


class EnvVar(common.Model):
    model_config = pydantic.ConfigDict(json_schema_extra={X_VALIDATIONS: [_env_name_rule()]})

    name: Annotated[str, pydantic.Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name.")]
    value: Annotated[str, pydantic.Field(max_length=32768, description="Variable value. Not for secrets: use the credentials Secret.")] = ""

    @pydantic.field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if reserved_env_name(name):
            raise ValueError(f"env name {name!r} is reserved: it changes which program runs, what it loads or where it connects")
        return name


class AgentSpec(common.Model):
    """Which agent runs the task, and how."""

    profile: Annotated[common.Token, pydantic.Field(description="An agent profile the factory offers (see the factory's agents).")]
    args: Annotated[
        list[Annotated[str, pydantic.StringConstraints(max_length=4096)]],
        pydantic.Field(max_length=64, description=(
            "Extra arguments for the agent: only flags (and values) the profile's allow.args lists; the profile decides "
            "where they go in its command line (never run through a shell). Anything else is refused (ArgNotAllowed).")),
    ] = []
    env: Annotated[
        list[EnvVar],
        pydantic.Field(
            max_length=64,
            description=("Extra environment for the agent process: only names the profile's allow.env lists (anything else "
                         "is refused: EnvNotAllowed); names that change how programs load are refused by the schema."),
            json_schema_extra={X_LIST_TYPE: "map", X_LIST_MAP_KEYS: ["name"]},
        ),
    ] = []
    limits: Annotated[AgentLimits | None, pydantic.Field(description=(
        "Model budget per attempt; needs a runner with the model gateway (its API keys in the runner's settings). "
        "Unset: no limit."))] = None


class Preference(common.Model):
    capability: Annotated[common.Token, pydantic.Field(description="A capability the job would like but can run without.")]
    weight: Annotated[int, pydantic.Field(ge=1, le=100, description="How much it matters, 1–100.")] = 10


class Requirements(common.Model):
    """What a factory must (capabilities) or should (preferences) offer to run this job."""

    capabilities: Annotated[list[common.Token], common.name_set("Capabilities every candidate factory must have (hard filter).")] = []
    preferences: Annotated[
        list[Preference],
        pydantic.Field(
            max_length=32,
            description="Capabilities that raise a factory's score by their weight (soft).",
            json_schema_extra={X_LIST_TYPE: "map", X_LIST_MAP_KEYS: ["capability"]},
        ),
    ] = []


class Backoff(common.Model):
    """Exponential backoff between attempts: initialSeconds × factor^(n-1), capped at maxSeconds, with jitter."""

    model_config = pydantic.ConfigDict(
        # kube-apiserver checks the schema's `default: {}` of this object against this rule before any
        # nested default is filled in, so the rule must hold on an object without the fields too.
        json_schema_extra={X_VALIDATIONS: [rule(
            "!has(self.maxSeconds) || !has(self.initialSeconds) || self.maxSeconds >= self.initialSeconds",
            "maxSeconds must be at least initialSeconds")]}
    )

    initial_seconds: Annotated[int, pydantic.Field(ge=0, le=86400, description="Delay before the second attempt.")] = 10
    factor: Annotated[float, pydantic.Field(ge=1, le=10, description="Multiplier for each further attempt.")] = 2.0
    max_seconds: Annotated[int, pydantic.Field(ge=0, le=86400, description="Upper bound of any one delay.")] = 600
    jitter: Annotated[
        float,
        pydantic.Field(ge=0, le=1, description="Each delay grows by up to this fraction, so jobs that failed together do not "
                       "retry together. Derived from the job's uid and attempt: the same in every replay."),
    ] = 0.1

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "Backoff":
        if self.max_seconds < self.initial_seconds:
            raise ValueError("maxSeconds must be at least initialSeconds")
        return self


class ExitCodeOperator(str, enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"


class ExitCodes(common.Model):
    operator: Annotated[ExitCodeOperator, pydantic.Field(description="In or NotIn.")]
    values: Annotated[list[Annotated[int, pydantic.Field(ge=0, le=255)]], pydantic.Field(min_length=1, max_length=255, description="Exit codes.")]


class RetryRule(common.Model):
    """Matches an attempt's outcome (and exit code); the first matching rule decides."""

    action: Annotated[RetryAction, pydantic.Field(description="FailJob, Count or Ignore.")]
    on_outcomes: Annotated[list[Outcome], pydantic.Field(min_length=1, max_length=8, description="Outcome classes this rule matches.")]
    on_exit_codes: Annotated[ExitCodes | None, pydantic.Field(description="Also require the agent's exit code to match (AgentFailed only).")] = None


class RetryPolicy(common.Model):
    """How failed attempts are retried. Without rules: Rejected fails the job, InfraError is retried without
    counting (up to maxUncountedRetries), every other failure counts against maxAttempts."""

    max_attempts: Annotated[int, pydantic.Field(ge=1, le=100, description="Attempts that count, including the first.")] = 3
    max_uncounted_retries: Annotated[
        int, pydantic.Field(ge=0, le=1000, description="Upper bound on retries an Ignore rule grants (so a broken fleet cannot loop forever).")
    ] = 10
    backoff: Annotated[Backoff, pydantic.Field(description="Delay between attempts.")] = Backoff()
    rules: Annotated[list[RetryRule], pydantic.Field(max_length=20, description="Rules by outcome class, checked in order.")] = []


class CleanupSpec(common.Model):
    delete_branch: Annotated[
        DeleteBranchPolicy,
        pydantic.Field(description="Delete the pushed branch when the job is deleted: Never, OnFailure or Always."),
    ] = DeleteBranchPolicy.NEVER


class AgentJobSpec(common.Model):
    """The desired work: repository, task, agent, where it may run and how it is retried."""

    queue: Annotated[common.Token, pydantic.Field(description="Logical queue; factories subscribe to queues.")] = "default"
    priority: Annotated[int, pydantic.Field(ge=0, le=1000, description="Higher runs first; waiting jobs age upward so none starves.")] = 0
    repo: Annotated[RepoSpec, pydantic.Field(description="The git repository to work on.")]
    task: Annotated[TaskSpec, pydantic.Field(description="What the agent is asked to do.")]
    agent: Annotated[AgentSpec, pydantic.Field(description="Which agent profile runs the task.")]
    requirements: Annotated[Requirements, pydantic.Field(description="Capabilities the factory must or should have.")] = Requirements()
    target_factory: Annotated[
        common.ObjectName | None,
        pydantic.Field(description="Pin the job to this factory. The hard filters still apply: a pin to an unfit factory waits and says why."),
    ] = None
    retry: Annotated[RetryPolicy, pydantic.Field(description="How failed attempts are retried.")] = RetryPolicy()
    active_deadline_seconds: Annotated[
        int | None,
        pydantic.Field(ge=1, le=7 * 86400, description="Fail the job with DeadlineExceeded this long after it was first bound."),
    ] = None
    ttl_seconds_after_finished: Annotated[
        int | None, pydantic.Field(ge=0, description="Delete the job this long after it finished. Unset: keep it.")
    ] = None
    cleanup: Annotated[CleanupSpec, pydantic.Field(description="What to remove when the job is deleted.")] = CleanupSpec()
    suspend: Annotated[
        bool, pydantic.Field(description="While true the job is not scheduled; a running attempt is stopped and requeued on resume.")
    ] = False
    cancel: Annotated[
        bool, pydantic.Field(description="Set true to cancel: a running attempt is stopped and the job ends Cancelled, without retries.")
    ] = False


class Assignment(common.Model):
    """The current binding of the job to a runner pod, and why that pod was chosen."""

    factory: Annotated[str, pydantic.Field(description="The Factory the job is bound to.")]
    pod: Annotated[str, pydantic.Field(description="The runner pod the job is bound to.")]
    pod_namespace: Annotated[str | None, pydantic.Field(description="The runner pod's namespace.")] = None
    attempt: Annotated[int, pydantic.Field(ge=1, description="The attempt this binding is for.")]
    lease: Annotated[str, pydantic.Field(description="Name of the binding Lease; the runner renews it while it runs the job.")]
    lease_namespace: Annotated[str | None, pydantic.Field(description="Namespace of the binding Lease.")] = None
    bound_at: Annotated[datetime.datetime, pydantic.Field(description="When the operator bound the job.")]
    claimed_at: Annotated[datetime.datetime | None, pydantic.Field(description="When the runner claimed the binding.")] = None
    score: Annotated[int, pydantic.Field(ge=0, le=100, description="The winning normalized score, 0–100.")] = 0
    scores: Annotated[dict[str, int], pydantic.Field(description="The score of each plugin for the chosen pod.")] = {}
    prices: Annotated[factories.Prices, pydantic.Field(description=(
        "The factory's prices when the job was bound (its spec.prices): what the runner enforces spec.agent.limits.cost "
        "with and what the attempt's estimated cost is computed from."))] = []


class PushedBranch(common.Model):
    """A branch an attempt pushed (or was about to push) before its report was lost."""

    branch: Annotated[str, pydantic.Field(max_length=255, description="The branch.")]
    commit: Annotated[str, pydantic.Field(max_length=64, description="The commit it pushed.")]


class AttemptRecord(common.Model):
    """One past attempt."""

    attempt: Annotated[int, pydantic.Field(ge=1, description="Attempt number.")]
    factory: Annotated[str | None, pydantic.Field(description="Factory it ran on.")] = None
    pod: Annotated[str | None, pydantic.Field(description="Runner pod it ran on.")] = None
    score: Annotated[int | None, pydantic.Field(ge=0, le=100, description="The normalized score that placed it there, 0–100.")] = None
    scores: Annotated[dict[str, int], pydantic.Field(description="The score of each plugin for that pod (the bind's breakdown).")] = {}
    started_at: Annotated[datetime.datetime | None, pydantic.Field(description="When it was bound.")] = None
    finished_at: Annotated[datetime.datetime | None, pydantic.Field(description="When it ended.")] = None
    outcome: Annotated[Outcome, pydantic.Field(description="How it ended.")]
    reason: Annotated[str, pydantic.Field(max_length=128, description="A finer CamelCase reason, e.g. LeaseExpired, ClaimTimeout.")] = ""
    message: Annotated[str, pydantic.Field(max_length=4096, description="What happened, for people.")] = ""
    exit_code: Annotated[int | None, pydantic.Field(description="The agent's exit code, when it exited.")] = None
    counted: Annotated[bool, pydantic.Field(description="Whether it counted against maxAttempts.")] = True
    log_ref: Annotated[str | None, pydantic.Field(max_length=512, description="Where the tail of the agent's output is kept.")] = None
    tokens: TokensPerModel = []
    cost: Annotated[float | None, pydantic.Field(ge=0, description=(
        "Estimated cost of the attempt: the sum over its priced models (absent when none had a price). An estimate "
        "(docs/agents.md#prices), not a bill."))] = None
    pushed: Annotated[
        PushedBranch | None,
        pydantic.Field(description="Set when the runner announced a push and then went silent: the next attempt adopts that "
                       "branch if the remote holds exactly this commit."),
    ] = None


class DiffStat(common.Model):
    files_changed: Annotated[int, pydantic.Field(ge=0, description="Files changed.")] = 0
    insertions: Annotated[int, pydantic.Field(ge=0, description="Lines added.")] = 0
    deletions: Annotated[int, pydantic.Field(ge=0, description="Lines removed.")] = 0


class Result(common.Model):
    """What a successful attempt produced."""

    branch: Annotated[str, pydantic.Field(description="The pushed branch.")]
    commit: Annotated[str, pydantic.Field(description="The commit at the branch's tip.")]
    base_commit: Annotated[str | None, pydantic.Field(description="The commit baseRef resolved to.")] = None
    changed_files: Annotated[list[str], pydantic.Field(max_length=1000, description="Paths changed relative to the base (at most 1000).")] = []
    diffstat: Annotated[DiffStat, pydantic.Field(description="Totals of the change.")] = DiffStat()
    summary: Annotated[str, pydantic.Field(max_length=8192, description="The agent's summary, or the tail of its output.")] = ""


class AttemptReport(common.Model):
    """How an attempt ended, as its runner reports it. The operator accepts it only for the current
    attempt from the pod that holds the binding, then folds it into attempts, result and phase."""

    attempt: Annotated[int, pydantic.Field(ge=1, description="The attempt reported on.")]
    pod: Annotated[str, pydantic.Field(max_length=253, description="The reporting runner pod.")]
    outcome: Annotated[Outcome, pydantic.Field(description="How it ended.")]
    reason: Annotated[str, pydantic.Field(max_length=128, description="A finer CamelCase reason.")] = ""
    message: Annotated[str, pydantic.Field(max_length=4096, description="What happened, for people.")] = ""
    exit_code: Annotated[int | None, pydantic.Field(description="The agent's exit code, when it exited.")] = None
    finished_at: Annotated[datetime.datetime | None, pydantic.Field(description="When it ended.")] = None
    log_ref: Annotated[str | None, pydantic.Field(max_length=512, description="Where the tail of the agent's output is kept.")] = None
    result: Annotated[Result | None, pydantic.Field(description="What it produced, when it succeeded.")] = None
    tokens: TokensPerModel = []


class AgentJobStatus(common.Model):
    """What the operator and the runner observed. Written through the status subresource only."""

    phase: Annotated[Phase, pydantic.Field(description="Pending, Bound, Running, Succeeded, Failed or Cancelled.")] = Phase.PENDING
    reason: Annotated[
        str | None,
        pydantic.Field(max_length=128, description=(
            "Why the job is in its phase, one CamelCase word written with it: Unschedulable, WaitingForCapacity, "
            "Requeued or RetryRequested (Pending); Bound; AgentRunning; Succeeded; AttemptsExhausted, DeadlineExceeded, "
            "InvalidSpec, Rejected... (Failed); Cancelled.")),
    ] = None
    conditions: common.Conditions = []
    observed_generation: Annotated[int | None, pydantic.Field(ge=0, description="The generation the status was computed from.")] = None
    attempt: Annotated[int, pydantic.Field(ge=0, description="The current (or last) attempt number; 0 before the first bind.")] = 0
    assignment: Annotated[Assignment | None, pydantic.Field(description="The current binding, while there is one.")] = None
    factory: Annotated[
        str | None,
        pydantic.Field(description="The factory of the current attempt, or of the last one once it ended (assignment goes with the "
                       "binding; this stays, for printer columns). Each attempt's record keeps its own."),
    ] = None
    pod: Annotated[str | None, pydantic.Field(description="The runner pod of the current attempt, or of the last one once it ended.")] = None
    attempts: Annotated[list[AttemptRecord], pydantic.Field(max_length=1200, description="Past attempts, oldest first.")] = []
    tokens: Annotated[int | None, pydantic.Field(ge=0, description=(
        "Input plus output tokens of every attempt so far, every model together (for printer columns)."))] = None
    cost: Annotated[float | None, pydantic.Field(ge=0, description=(
        "Estimated cost of every attempt so far (for printer columns; see attempts[].cost)."))] = None
    requeue_at: Annotated[datetime.datetime | None, pydantic.Field(description="When a job in backoff becomes schedulable again.")] = None
    start_time: Annotated[datetime.datetime | None, pydantic.Field(description="When the job was first bound.")] = None
    completion_time: Annotated[datetime.datetime | None, pydantic.Field(description="When the job reached a terminal phase.")] = None
    result: Annotated[Result | None, pydantic.Field(description="The outcome of the successful attempt.")] = None
    report: Annotated[
        AttemptReport | None, pydantic.Field(description="The runner's report of the current attempt, until the operator folds it in.")
    ] = None
    count_from: Annotated[
        int, pydantic.Field(ge=0, description="spec.retry counts attempts numbered from here on: a retried job gets a fresh budget.")
    ] = 0
    retry_request: Annotated[
        str | None, pydantic.Field(max_length=128, description="The gigafactory.dev/retry annotation value the operator last honoured.")
    ] = None


class AgentJob(common.Model):
    """An autonomous coding-agent job: check out a repo, run an agent on a task, push a branch."""

    api_version: Annotated[str, pydantic.Field(description="gigafactory.dev/v1alpha1")] = constants.API_VERSION
    kind: Annotated[str, pydantic.Field(description="AgentJob")] = constants.AGENTJOB_KIND
    metadata: Annotated[dict[str, Any], pydantic.Field(description="Standard object metadata.")] = {}
    spec: AgentJobSpec
    status: AgentJobStatus = AgentJobStatus()
