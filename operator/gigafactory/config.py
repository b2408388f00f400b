"""Settings of the operator and of the runner, from the environment (prefix GIGAFACTORY_) or flags.

One class per process; each field says what it is for. Helm values map onto these env names.
"""

import pathlib
from typing import Annotated, Any, Literal

import pydantic
import pydantic_settings


class OperatorSettings(pydantic_settings.BaseSettings):
    """The operator process (`gigafactory operator`)."""

    model_config = pydantic_settings.SettingsConfigDict(env_prefix="GIGAFACTORY_", extra="ignore")

    # Explicit kubeconfig file; unset means the in-cluster service account.
    kubeconfig: str | None = None
    # Namespace of the operator's own objects (leader-election Lease).
    namespace: str = "gigafactory-system"
    # Run as one of several replicas: only the holder of the Lease `leader_lease_name` works; the others
    # stand by and take over within about leader_lease_seconds + a second of the leader's loss.
    leader_election: bool = False
    leader_lease_name: str = "gigafactory-operator"
    leader_lease_seconds: int = pydantic.Field(default=8, ge=2)
    # A binding that no runner claims within this long is undone and the job rebinds elsewhere.
    claim_timeout_seconds: int = pydantic.Field(default=30, ge=1)
    # How long a stopped attempt's runner gets to acknowledge before the operator proceeds without it.
    stop_grace_seconds: int = pydantic.Field(default=60, ge=1)
    # Coalesce bursts of changes into one scheduling cycle (seconds).
    schedule_debounce_seconds: float = pydantic.Field(default=0.02, ge=0)
    # spread: prefer the pod with the most free slots; pack: the one with the fewest (frees whole pods).
    capacity_strategy: Literal["spread", "pack"] = "spread"
    # Score plugin weights (0 switches a plugin off).
    weight_free_capacity: int = pydantic.Field(default=1, ge=0)
    weight_warm_repo: int = pydantic.Field(default=2, ge=0)
    weight_preferences: int = pydantic.Field(default=2, ge=0)
    weight_cost: int = pydantic.Field(default=1, ge=0)
    weight_success_rate: int = pydantic.Field(default=1, ge=0)
    weight_repo_spread: int = pydantic.Field(default=1, ge=0)
    # A waiting job gains one priority point per this many seconds, so no job starves.
    aging_seconds_per_point: float = pydantic.Field(default=60, gt=0)
    # Score at most this many feasible pods per job (warm pods first, then in rotation): bounds a
    # cycle's cost on a large fleet, as kube-scheduler's percentageOfNodesToScore does.
    max_pods_to_score: int = pydantic.Field(default=32, ge=1)
    # Binds (and explanation writes) in flight at once, so a burst does not flood the API server.
    bind_concurrency: int = pydantic.Field(default=64, ge=1)
    # A waiting job's Scheduled=False message is rewritten at once when its substance changes (a
    # reason the job or the fleet's configuration must lift, or no pod at all); when only counts of
    # busy or stale pods change, at most this often, so that churn in a big fleet is no write storm.
    explanation_refresh_seconds: float = pydantic.Field(default=120, ge=0)
    # "Scheduled" Events (kubectl describe shows them): at most this many per second on average, in
    # bursts of up to ten times that. Beyond, a bind writes no Event: its score breakdown is in the
    # job's status.assignment anyway, and an Event is one more write per bind in a burst.
    bind_events_per_second: float = pydantic.Field(default=20, ge=0)
    # Port of /healthz, /readyz and /metrics.
    http_port: int = pydantic.Field(default=8080, ge=0, le=65535)
    # Log level of the JSON logs (DEBUG shows every write and watch restart).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Branch cleanup on job deletion (cleanup.deleteBranch): accept file:// URLs and local paths
    # (dev mode and tests only), and kill a git push that stalls after this long.
    allow_local_repos: bool = False
    git_timeout_seconds: int = pydantic.Field(default=120, ge=1)
    # Branch cleanup over SSH without known_hosts in the job's Secret: refused unless true (as the runner's).
    ssh_accept_new_host_keys: bool = False
    # The namespaces where the platform runs runner pods (comma-separated; empty: `namespace` alone).
    # Heartbeat and binding Leases count only there: a Lease anywhere else is ignored (never cached,
    # never scheduled to, never trusted for a push) and reported once (an Event on it and the counter
    # gigafactory_leases_ignored), and binding Leases are created only there. "*" trusts every
    # namespace: for tests and single-tenant clusters only, as then anyone who may create a Lease
    # anywhere can enrol a runner (docs/security.md, "What the operator trusts").
    runner_namespaces: Annotated[list[str], pydantic_settings.NoDecode] = []
    # The ServiceAccount of a scaled factory's runner pods ("{factory}" is replaced by the Factory's
    # name): forced onto the Deployment the operator makes from spec.scaling.template, so that whoever
    # writes a Factory cannot give its pods another identity (the chart: "<release>-{factory}-runner").
    runner_service_account: str = "{factory}-runner"

    @pydantic.field_validator("runner_namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @pydantic.field_validator("runner_service_account")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        if value.replace("{factory}", "x").count("{") or value.replace("{factory}", "x").count("}"):
            raise ValueError("only the placeholder {factory} is allowed")
        return value

    def runner_namespace_set(self) -> frozenset[str] | None:
        """The declared runner namespaces; None for "*" (every namespace)."""
        declared = frozenset(self.runner_namespaces or [self.namespace])
        return None if "*" in declared else declared


class RunnerSettings(pydantic_settings.BaseSettings):
    """The runner process in each factory pod (`gigafactory runner`)."""

    model_config = pydantic_settings.SettingsConfigDict(env_prefix="GIGAFACTORY_RUNNER_", extra="ignore")

    # Explicit kubeconfig file; unset means the in-cluster service account.
    kubeconfig: str | None = None
    # This pod's name and namespace (the Downward API sets them in a cluster).
    pod_name: str
    namespace: str = "default"
    # The Factory this pod belongs to.
    factory: str
    # Jobs this pod runs at once.
    slots: int = pydantic.Field(default=1, ge=1, le=64)
    # Where mirrors and worktrees live.
    work_dir: str = "/var/lib/gigafactory"
    # YAML file of agent profiles (name → argv template, env, timeout).
    profiles_file: str | None = None
    # Heartbeat Lease duration; renewed every third of it.
    heartbeat_seconds: int = pydantic.Field(default=15, ge=3)
    # Binding Lease duration while a job runs; renewed every third of it.
    binding_lease_seconds: int = pydantic.Field(default=30, ge=3)
    # On SIGTERM: how long running jobs may go on before they are stopped and released.
    shutdown_grace_seconds: int = pydantic.Field(default=30, ge=0)
    # Accept file:// URLs and local paths as repositories (dev mode and tests only).
    allow_local_repos: bool = False
    # SSH remotes whose credentials Secret has no known_hosts: refused (false), or the host's first key
    # is trusted for the call (true: a pool that accepts being talked to by whoever answers).
    ssh_accept_new_host_keys: bool = False
    # Network git calls (fetch, push) are killed after this long, so a remote that stalls cannot hold
    # its mirror's lock (and every other job of that repository on this pod) forever.
    git_timeout_seconds: int = pydantic.Field(default=600, ge=1)
    # A task longer than this (UTF-8 bytes, inline or from a ConfigMap) is refused: Rejected, PromptTooLarge.
    max_prompt_bytes: int = pydantic.Field(default=256 * 1024, ge=1)
    # The model gateway (runner/gateway.py, docs/agents.md): for each API whose key is set here, agents get
    # a loopback base URL and a per-attempt token instead of the key, and the runner forwards to the base
    # URL with the key, counting tokens and enforcing spec.agent.limits. GIGAFACTORY_* never reaches an agent.
    anthropic_api_key: pydantic.SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    openai_api_key: pydantic.SecretStr | None = None
    openai_base_url: str = "https://api.openai.com"  # without /v1: the agent's own paths carry it
    # Or the key in a file (a mounted Secret: the chart's pools[].gateway), read once at start; the key's
    # own setting wins when both are set. Under /var/run/secrets, which the agent sandbox never shows.
    anthropic_api_key_file: str | None = None
    openai_api_key_file: str | None = None
    # The gateway's port on 127.0.0.1; 0: any free one. Fix it where an agent's config file names the URL (Codex).
    gateway_port: int = pydantic.Field(default=0, ge=0, le=65535)
    # How agents run. namespaces: each in its own user, mount, pid, ipc and uts namespaces, seeing only
    # its worktree, its prompt, its repository's objects and the system read-only (docs/security.md,
    # "Agent sandbox"); a runner that cannot build that sandbox refuses to start. none: as the runner's
    # own user with all of the runner's files and credentials (a pool that opts out; logged and
    # announced on the heartbeat Lease, which `gigafactory describe factory` shows).
    sandbox: Literal["namespaces", "none"] = "namespaces"
    # The agents' network: shared with the pod (agents call model APIs), or none (own empty net namespace).
    sandbox_network: Literal["shared", "none"] = "shared"
    # Extra paths agents may read (read-only), e.g. an agent installed outside /usr; never under work_dir.
    sandbox_read_only_paths: list[str] = []
    # Log level.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @pydantic.model_validator(mode="after")
    def _keys_from_files(self) -> "RunnerSettings":
        for api in ("anthropic", "openai"):
            path = getattr(self, f"{api}_api_key_file")
            if path and getattr(self, f"{api}_api_key") is None:
                try:
                    key = pathlib.Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"{api}_api_key_file: cannot read {path}: {exc.strerror}") from None
                if not key:
                    raise ValueError(f"{api}_api_key_file: {path} is empty")
                setattr(self, f"{api}_api_key", pydantic.SecretStr(key))
        return self
