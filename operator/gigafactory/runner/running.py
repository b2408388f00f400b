"""The runner process: heartbeat, watch own bindings, claim, run, push, report, release.

Every step follows docs/protocol.md. An attempt's binding Lease is released in a `finally`, so
every exit path (success, failure, exception, stop, shutdown) gives the slot back.
"""

import asyncio
import base64
import contextlib
import datetime
import fcntl
import logging
import os
import pathlib
import secrets
import signal
import tempfile
import time
from typing import Any

import pydantic

from gigafactory import config, consent, constants, kubeclient, leases, remotes
from gigafactory.models import agentjobs
from gigafactory.runner import executing, gateway, profiles, sandbox, worktrees

logger = logging.getLogger(__name__)

LOG_CONFIGMAP_BYTES = executing.TAIL_BYTES  # far under the 1 MiB object limit


def _stamp(moment: datetime.datetime | None = None) -> str:
    return (moment or leases.now()).strftime("%Y-%m-%dT%H:%M:%SZ")


class AttemptFailed(Exception):
    """A classified end of an attempt before or after the agent ran."""

    def __init__(self, outcome: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.outcome, self.reason, self.message = outcome, reason, message


class Attempt:
    """One claimed binding being worked on."""

    def __init__(self, binding: leases.Binding) -> None:
        self.binding = binding
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None
        self.budget: str | None = None  # why the model gateway stopped it (BudgetExceeded)
        self.lost = False
        self.lease_version = binding.resource_version
        self.lease_claimed = False
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.binding.job_uid}-{self.binding.attempt}"


class Runner:
    def __init__(self, settings: config.RunnerSettings, client: kubeclient.Client) -> None:
        self.settings = settings
        self.client = client
        self.workspace = worktrees.Workspace(pathlib.Path(settings.work_dir), network_timeout=settings.git_timeout_seconds,
                                             allow_local=settings.allow_local_repos,
                                             accept_new_host_keys=settings.ssh_accept_new_host_keys)
        self.profiles = profiles.load(settings.profiles_file)
        # Announced to the scheduler: a profile whose command is not installed in this image would
        # only turn every job bound for it into a failure.
        self.agents = sorted(name for name, profile in self.profiles.items() if profile.installed())
        self.attempts: dict[str, Attempt] = {}  # binding lease name → attempt
        self.seen: set[str] = set()
        self.draining = False
        self.heartbeat_version: str | None = None
        self.announced_repos: list[str] = []
        self.wake = asyncio.Event()
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.pids = self.workspace.root / "agents"
        self.pids.mkdir(exist_ok=True)
        upstreams = gateway.from_settings(
            anthropic_url=settings.anthropic_base_url, openai_url=settings.openai_base_url,
            anthropic_key=settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None,
            openai_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None)
        # With the pool's keys in its settings, agents reach the models only through this gateway.
        self.gateway = gateway.Gateway(upstreams, port=settings.gateway_port) if upstreams else None
        self.sandbox = sandbox.Sandbox(mode=settings.sandbox, network=settings.sandbox_network == "shared",
                                       read_only=tuple(settings.sandbox_read_only_paths))

    def sandboxed(self, argv: list[str], *, env: dict[str, str], checkout: worktrees.Checkout,
                  prompt_file: pathlib.Path) -> sandbox.Command:
        """The agent's command in its sandbox: its worktree read-write, its prompt and its repository's
        objects read-only, nothing else of the work dir (other worktrees, mirrors, askpass, keys)."""
        writable = [str(checkout.path)]
        marker = os.environ.get("GIGAFACTORY_SCRIPT_MARKER")
        if marker:  # the script agent's execution counter and its peers' barrier (tests only)
            pathlib.Path(marker).touch()
            pathlib.Path(f"{marker}.d").mkdir(exist_ok=True)
            writable += [marker, f"{marker}.d"]
        return self.sandbox.command(argv, env=env, cwd=str(checkout.path), writable=writable,
                                    readable=[str(prompt_file), str(checkout.objects.resolve())],
                                    hidden=[str(self.workspace.root)])

    # --- heartbeat ---

    def _heartbeat_body(self) -> dict[str, Any]:
        return leases.build_heartbeat_lease(
            pod=self.settings.pod_name, namespace=self.settings.namespace, factory=self.settings.factory,
            slots=self.settings.slots, agents=self.agents, warm_repos=self.announced_repos,
            duration_seconds=self.settings.heartbeat_seconds, moment=leases.now(), draining=self.draining,
            sandbox=self.sandbox.mode,
        )

    async def announce(self) -> None:
        self.announced_repos = self.workspace.warm_repos()
        body = self._heartbeat_body()
        try:
            created = await self.client.create(kubeclient.LEASES, body)
        except kubeclient.AlreadyExists:
            current = await self.client.get(kubeclient.LEASES, self.settings.pod_name, namespace=self.settings.namespace)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            created = await self.client.replace(kubeclient.LEASES, self.settings.pod_name, body, namespace=self.settings.namespace)
        self.heartbeat_version = created["metadata"]["resourceVersion"]

    async def renew_heartbeat(self) -> None:
        repos = self.workspace.warm_repos()
        patch: dict[str, Any] = leases.renew_patch(moment=leases.now(), resource_version=self.heartbeat_version or "")
        if repos != self.announced_repos:  # annotations change only when what they say changes
            patch["metadata"]["annotations"] = {constants.ANNOTATION_WARM_REPOS: ",".join(repos)}
        try:
            updated = await self.client.patch(kubeclient.LEASES, self.settings.pod_name, patch, namespace=self.settings.namespace)
            self.heartbeat_version = updated["metadata"]["resourceVersion"]
            self.announced_repos = repos
        except (kubeclient.Conflict, kubeclient.NotFound):
            await self.announce()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds / 3)
            try:
                await self.renew_heartbeat()
            except (kubeclient.ApiError, OSError) as exc:
                logger.warning("heartbeat renewal failed: %s", exc)

    # --- bindings ---

    def on_binding(self, kind: str, lease: dict[str, Any]) -> None:
        binding = leases.parse_binding(lease)
        if binding is None or binding.pod != self.settings.pod_name:
            return
        attempt = self.attempts.get(binding.name)
        if kind == "DELETED":
            self.seen.discard(binding.name)
            if attempt is not None and not attempt.stop.is_set():
                attempt.lost = True  # the operator moved on: stop, report nothing
                attempt.stop.set()
            return
        if attempt is not None:
            if binding.resource_version:
                attempt.lease_version = binding.resource_version
            if binding.stop and not attempt.stop.is_set():
                attempt.stop_reason = binding.stop
                attempt.stop.set()
            return
        if binding.name in self.seen or binding.claimed or binding.stop or binding.holder != self.settings.pod_name:
            return
        if self.draining or len(self.attempts) >= self.settings.slots:
            return  # unclaimed: the operator's claim timeout moves it elsewhere
        self.seen.add(binding.name)
        attempt = Attempt(binding)
        self.attempts[binding.name] = attempt
        attempt.task = asyncio.create_task(self.handle(attempt), name=f"attempt:{binding.name}")

    async def _read_job(self, binding: leases.Binding) -> dict[str, Any]:
        return await self.client.get(kubeclient.AGENTJOBS, binding.job_name, namespace=binding.job_namespace)

    def _mine(self, job: dict[str, Any], binding: leases.Binding) -> bool:
        status = job.get("status") or {}
        assignment = status.get("assignment") or {}
        return (job["metadata"].get("uid") == binding.job_uid and status.get("attempt") == binding.attempt
                and assignment.get("pod") == self.settings.pod_name)

    async def claim(self, attempt: Attempt) -> dict[str, Any] | None:
        """Steps 1–3 of the claim; None when the binding is no longer ours."""
        binding = attempt.binding
        for _ in range(5):
            try:
                job = await self._read_job(binding)
            except kubeclient.NotFound:
                return None
            if not self._mine(job, binding) or (job.get("status") or {}).get("phase") != agentjobs.Phase.BOUND.value:
                return None
            now = leases.now()
            if not attempt.lease_claimed:
                try:
                    lease = await self.client.patch(kubeclient.LEASES, binding.name, leases.claim_patch(
                        pod=self.settings.pod_name, duration_seconds=self.settings.binding_lease_seconds, moment=now,
                        resource_version=attempt.lease_version or ""), namespace=binding.namespace)
                except (kubeclient.Conflict, kubeclient.NotFound):
                    return None  # the operator changed it first (a stop, an undo): not ours to run
                attempt.lease_version = lease["metadata"]["resourceVersion"]
                attempt.lease_claimed = True
            conditions = [c for c in (job["status"].get("conditions") or []) if c.get("type") not in ("Claimed", "Running")]
            conditions += [
                {"type": "Claimed", "status": "True", "reason": "Claimed", "message": f"claimed by {self.settings.pod_name}",
                 "lastTransitionTime": _stamp(now), "observedGeneration": job["metadata"].get("generation")},
                {"type": "Running", "status": "True", "reason": "AgentRunning", "message": "the agent is running",
                 "lastTransitionTime": _stamp(now), "observedGeneration": job["metadata"].get("generation")},
            ]
            patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
                     "status": {"phase": agentjobs.Phase.RUNNING.value, "reason": "AgentRunning", "assignment": {"claimedAt": _stamp(now)},
                                "conditions": conditions}}
            try:
                return await self.client.patch(kubeclient.AGENTJOBS, binding.job_name, patch,
                                               namespace=binding.job_namespace, subresource="status")
            except kubeclient.Conflict:
                continue  # re-read: go on only while the assignment still names us
        return None

    async def renew_loop(self, attempt: Attempt) -> None:
        binding = attempt.binding
        renewed = time.monotonic()
        while not attempt.stop.is_set():
            await asyncio.sleep(self.settings.binding_lease_seconds / 3)
            if time.monotonic() - renewed > self.settings.binding_lease_seconds:
                # Cut off from the API server for longer than the Lease: the operator has (or soon will
                # have) given the job to another runner. Stop the agent rather than run it twice.
                logger.warning("could not renew %s for %ss: stopping its agent", binding.name, self.settings.binding_lease_seconds)
                attempt.lost = True
                attempt.stop.set()
                return
            try:
                # A renewal that hangs (a partition, a server retrying us with Retry-After) must not
                # keep this loop from noticing that the Lease has run out: bound it by what is left.
                left = max(0.1, self.settings.binding_lease_seconds - (time.monotonic() - renewed))
                lease = await asyncio.wait_for(self.client.patch(kubeclient.LEASES, binding.name, leases.renew_patch(
                    moment=leases.now(), resource_version=attempt.lease_version or ""), namespace=binding.namespace), left)
                attempt.lease_version = lease["metadata"]["resourceVersion"]
                renewed = time.monotonic()
            except kubeclient.Conflict:
                try:
                    lease = await self.client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace)
                except kubeclient.NotFound:
                    lease = None
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.settings.pod_name:
                    attempt.lost = True
                    attempt.stop.set()
                    return
                attempt.lease_version = lease["metadata"]["resourceVersion"]
                parsed = leases.parse_binding(lease)
                stop = parsed.stop if parsed else None
                if stop:
                    attempt.stop_reason = stop
                    attempt.stop.set()
            except kubeclient.NotFound:
                attempt.lost = True
                attempt.stop.set()
            except (kubeclient.ApiError, OSError, asyncio.TimeoutError) as exc:
                logger.warning("renewing %s failed: %s", binding.name, str(exc) or "no answer in time")

    async def _secret(self, job: dict[str, Any]) -> remotes.Credentials:
        name = ((job.get("spec") or {}).get("repo") or {}).get("credentialsSecret")
        if not name:
            return remotes.Credentials()
        try:
            secret = await self.client.get(kubeclient.SECRETS, name, namespace=job["metadata"]["namespace"])
        except kubeclient.NotFound:
            raise AttemptFailed("Rejected", "SecretNotFound", f"Secret {name} not found in namespace {job['metadata']['namespace']}") from None
        try:  # before any connection: a Secret its owner did not mark for this host is sent nowhere
            consent.check_secret(secret, url=str(job["spec"]["repo"]["url"]))
        except consent.Refused as exc:
            raise AttemptFailed("Rejected", exc.reason, exc.message) from None
        data = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return remotes.credentials_from_secret(data)

    async def _prompt(self, job: dict[str, Any], spec: agentjobs.AgentJobSpec) -> str:
        if spec.task.prompt is not None:
            return spec.task.prompt
        ref = spec.task.prompt_from.config_map_key_ref  # type: ignore[union-attr]
        try:
            cm = await self.client.get(kubeclient.CONFIGMAPS, ref.name, namespace=job["metadata"]["namespace"])
        except kubeclient.NotFound:
            raise AttemptFailed("Rejected", "PromptNotFound", f"ConfigMap {ref.name} not found") from None
        text = (cm.get("data") or {}).get(ref.key)
        if text is None:
            raise AttemptFailed("Rejected", "PromptNotFound", f"ConfigMap {ref.name} has no key {ref.key}")
        return text

    async def execute(self, attempt: Attempt, job: dict[str, Any]) -> dict[str, Any]:
        """Prepare, run the agent, push; returns the report (without attempt/pod/finishedAt)."""
        try:
            spec = agentjobs.AgentJob.model_validate(job).spec
        except pydantic.ValidationError as exc:  # the schema should have refused it; a runner does not rely on that
            first = exc.errors()[0]
            where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
            raise AttemptFailed("Rejected", "InvalidSpec", f"{where}: {first['msg']}") from None
        profile = self.profiles.get(spec.agent.profile)
        if profile is None:
            raise AttemptFailed("Rejected", "ProfileUnknown", f"agent profile {spec.agent.profile!r} is not offered by this runner")
        # A job adds only what its profile allows (the chart's admission policy says so too; a runner
        # does not rely on it): no flag that overrides the profile's, no env that changes what runs.
        try:
            profile.check_args(spec.agent.args)
            profile.check_env(env.name for env in spec.agent.env)
        except profiles.NotAllowed as exc:
            raise AttemptFailed("Rejected", exc.reason, exc.message) from None
        if spec.agent.limits is not None and self.gateway is None:
            raise AttemptFailed("Rejected", "LimitsNotEnforced",
                                "spec.agent.limits: this runner has no model gateway to count what the agent spends")
        branch = spec.repo.branch or f"agent/{job['metadata']['name']}"
        try:
            remotes.check_url(spec.repo.url, allow_local=self.settings.allow_local_repos)
            remotes.check_ref(branch, what="branch")
        except remotes.GitFailure as exc:
            raise AttemptFailed(exc.outcome, exc.reason, exc.message) from None
        credentials = await self._secret(job)
        prompt = await self._prompt(job, spec)
        size = len(prompt.encode("utf-8", errors="replace"))
        if size > self.settings.max_prompt_bytes:
            raise AttemptFailed("Rejected", "PromptTooLarge",
                                f"the task is {size} bytes; this runner accepts at most {self.settings.max_prompt_bytes}")
        label = f"{job['metadata']['namespace']}/{job['metadata']['name']}#{attempt.binding.attempt}"
        mirror = None
        try:
            mirror = await self.workspace.sync_mirror(spec.repo.url, credentials)
            if await self.workspace.branch_exists(mirror, branch):
                adopted = await self._adopt(job, mirror, branch, spec.repo.base_ref)
                if adopted is not None:
                    return adopted
                # Known before the agent runs: an attempt that could never push is not started.
                raise AttemptFailed("PushFailed", "BranchExists",
                                    f"branch {branch} already exists on the remote; a runner never overwrites a branch")
            checkout = await self.workspace.add_worktree(mirror, name=attempt.name, base_ref=spec.repo.base_ref, branch=branch)
            workdir = checkout.path
            with tempfile.TemporaryDirectory(prefix="gf-task-", dir=self.workspace.root) as tmp:
                prompt_file = pathlib.Path(tmp) / "prompt.md"
                prompt_file.write_text(prompt)
                try:
                    argv = profile.render(prompt_file=prompt_file, workdir=workdir, job=job["metadata"]["name"],
                                          branch=branch, extra_args=spec.agent.args)
                except FileNotFoundError as exc:
                    raise AttemptFailed("Rejected", "AgentNotRunnable", f"cannot start the agent: {exc}") from None
                env = {**worktrees.clean_env(), **profile.env, **{e.name: e.value for e in spec.agent.env},
                       "GIGAFACTORY_JOB": job["metadata"]["name"], "GIGAFACTORY_BRANCH": branch, "GIT_TERMINAL_PROMPT": "0"}
                if "GIGAFACTORY_SCRIPT_MARKER" in os.environ:  # the script agent's execution counter (tests)
                    env["GIGAFACTORY_SCRIPT_MARKER"] = os.environ["GIGAFACTORY_SCRIPT_MARKER"]
                session = None
                if self.gateway is not None:
                    def exceeded(why: str) -> None:
                        attempt.budget, attempt.stop_reason = why, "BudgetExceeded"
                        attempt.stop.set()

                    limits = spec.agent.limits or agentjobs.AgentLimits()
                    session = self.gateway.open(gateway.Limits(requests=limits.requests, tokens=limits.tokens), exceeded)
                    env.update(self.gateway.env(session))  # a loopback URL and this attempt's token, never the key
                command = self.sandboxed(argv, env=env, checkout=checkout, prompt_file=prompt_file)
                try:
                    result = await executing.run(command.argv, cwd=str(workdir), env=command.env, timeout=profile.timeout_seconds,
                                                 stop=attempt.stop, label=label,
                                                 stdin=prompt.encode() if profile.stdin == "prompt" else None,
                                                 pid_file=self.pids / f"{attempt.name}.pid", pass_fds=command.pass_fds)
                except OSError as exc:
                    raise AttemptFailed("Rejected", "AgentNotRunnable", f"cannot start the agent: {exc}") from None
                finally:
                    command.close()
                    if session is not None and self.gateway is not None:
                        self.gateway.forget(session)
                        logger.info("[%s] model usage: %s", label, session.summary())
            failed = sandbox.failure(command, result.exit_code, result.tail)
            if failed == "setup":
                raise AttemptFailed("InfraError", "SandboxFailed", f"the agent's sandbox could not be built: {result.tail[-500:].strip()}")
            if failed == "exec":
                raise AttemptFailed("Rejected", "AgentNotRunnable", f"cannot start the agent: {result.tail[-500:].strip()}")
            log_ref = await self.save_log(attempt, job, result.tail)
            report: dict[str, Any] = {"outcome": result.outcome, "exitCode": result.exit_code, "logRef": log_ref}
            if session is not None and session.usage:
                report["tokens"] = [{"model": model[:256], "inputTokens": used["input"], "outputTokens": used["output"],
                                     "requests": used["requests"]} for model, used in list(session.summary().items())[:32]]
            if result.outcome == "Stopped" and attempt.stop_reason == "RunnerShutdown":
                report.update(outcome="InfraError", reason="RunnerShutdown", message="the runner shut down before the agent finished")
                return report
            if result.outcome == "Stopped" and attempt.stop_reason == "BudgetExceeded":
                report.update(reason="BudgetExceeded", message=f"the agent crossed spec.agent.limits: {attempt.budget}")
                return report
            if result.outcome == "Stopped":
                report["reason"] = attempt.stop_reason or "Stopped"
                report["message"] = f"stopped by the operator ({attempt.stop_reason})"
                return report
            if result.outcome == "TimedOut":
                report["reason"] = "AgentTimeout"
                report["message"] = f"the agent ran longer than {profile.timeout_seconds}s and was killed"
                return report
            if result.outcome == "AgentFailed":
                report["reason"] = "AgentExit"
                report["message"] = f"the agent exited with code {result.exit_code}: {result.tail[-300:].strip()}"
                return report
            # From here on the worktree and the agent's .git are hostile input: the agent's commits come
            # in by a checked fetch, and every git step runs on the runner's own git dir.
            await self.workspace.take_agent_work(checkout)
            summary = await self.workspace.take_summary(checkout) or result.tail[-2000:]
            await self.workspace.commit_leftovers(checkout, f"{job['metadata']['name']}: agent changes")
            described = await self.workspace.describe(checkout.trusted, checkout.base)
            await self._announce_push(attempt, branch, described["commit"])
            await self.workspace.push(checkout, url=spec.repo.url, branch=branch, credentials=credentials)
            report["result"] = {"branch": branch, **described, "summary": summary}
            report["message"] = f"pushed {branch} at {described['commit'][:12]}"
            return report
        except remotes.GitFailure as exc:
            raise AttemptFailed(exc.outcome, exc.reason, exc.message) from None
        finally:
            if mirror is not None:
                await self.workspace.remove_worktree(mirror, attempt.name)

    async def _announce_push(self, attempt: Attempt, branch: str, commit: str) -> None:
        """Write "<commit> <branch>" on the binding Lease before pushing. Should this runner die
        between the push and its report, the operator copies it into the attempt's record and the
        next attempt adopts the branch instead of failing on BranchExists. Also a fence: a runner
        whose Lease is gone (the operator moved on) does not push."""
        binding = attempt.binding
        trouble = ""
        for _ in range(8):
            try:
                try:
                    lease = await self.client.patch(kubeclient.LEASES, binding.name, leases.pushed_patch(
                        branch=branch, commit=commit, resource_version=attempt.lease_version or ""), namespace=binding.namespace)
                    attempt.lease_version = lease["metadata"]["resourceVersion"]
                    return
                except kubeclient.Conflict:
                    lease = await self.client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace)
                    if (lease.get("spec") or {}).get("holderIdentity") != self.settings.pod_name:
                        break
                    attempt.lease_version = lease["metadata"]["resourceVersion"]
            except kubeclient.NotFound:
                break
            except (kubeclient.ApiError, OSError) as exc:  # the API is struggling: try again shortly
                trouble = str(exc)
                await asyncio.sleep(0.5)
        else:
            raise AttemptFailed("InfraError", "ApiUnavailable", f"could not record the push on the binding Lease: {trouble}"[:4000])
        attempt.lost = True
        attempt.stop.set()
        raise AttemptFailed("InfraError", "LeaseLost", "the binding Lease is gone: not pushing")

    async def _adopt(self, job: dict[str, Any], mirror: pathlib.Path, branch: str, base_ref: str) -> dict[str, Any] | None:
        """The branch exists: if an earlier attempt of this job announced pushing exactly the commit the
        remote holds (and then went silent), that push is this job's result: report it, run nothing."""
        tip = await self.workspace.remote_tip(mirror, branch)
        earlier = [a for a in (job.get("status") or {}).get("attempts") or ()
                   if (a.get("pushed") or {}).get("branch") == branch and (a.get("pushed") or {}).get("commit") == tip]
        if tip is None or not earlier:
            return None
        base = await self.workspace.resolve_base(mirror, base_ref)
        described = await self.workspace.describe(mirror, base, tip)
        number = earlier[-1].get("attempt")
        summary = f"Adopted {branch} at {tip[:12]}, pushed by attempt {number} whose report was lost."
        logger.info("adopting %s at %s pushed by attempt %s", branch, tip[:12], number)
        return {"outcome": "Succeeded", "reason": "Adopted", "result": {"branch": branch, **described, "summary": summary},
                "message": f"adopted {branch} at {tip[:12]}: attempt {number} pushed it and was lost before reporting"}

    async def save_log(self, attempt: Attempt, job: dict[str, Any], tail: str) -> str | None:
        """The output's tail in a size-capped ConfigMap beside the runner; its name goes in the report.

        The name starts with this pod's prefix (the runner policy allows no other) and ends with a random
        part: no one can create it ahead of us (a forged log), and readers accept it only with this pod's
        and this job's labels (consent.log_belongs)."""
        for _ in range(3):
            name = f"{consent.log_name_prefix(self.settings.pod_name)}{attempt.binding.attempt}-{secrets.token_hex(5)}"
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": self.settings.namespace,
                                 # The job's uid as a label: whoever cleans up after a job can select its logs.
                                 "labels": {constants.LABEL_ROLE: "log", constants.LABEL_POD: self.settings.pod_name,
                                            constants.LABEL_JOB_UID: attempt.binding.job_uid},
                                 "annotations": {constants.LABEL_JOB: f"{job['metadata']['namespace']}/{job['metadata']['name']}"}},
                    "data": {"output": tail[-LOG_CONFIGMAP_BYTES:]}}
            try:
                await self.client.create(kubeclient.CONFIGMAPS, body)
            except kubeclient.AlreadyExists:
                continue  # taken by someone else: never reuse (nor report) a log we did not write
            except (kubeclient.ApiError, OSError) as exc:
                logger.warning("could not keep the log of %s: %s", attempt.name, exc)
                return None
            return f"configmap/{self.settings.namespace}/{name}"
        return None

    async def report(self, attempt: Attempt, report: dict[str, Any]) -> None:
        """status.report, only while the job's current attempt is still ours (precondition on a fresh read).

        A report is the only trace of what the attempt did, so transient API trouble is retried (the
        binding Lease is still being renewed meanwhile), and a report the schema refuses is sent again
        cut down to its outcome rather than lost."""
        binding = attempt.binding
        body = {"attempt": binding.attempt, "pod": self.settings.pod_name, "finishedAt": _stamp(), **report}
        body = {k: v for k, v in body.items() if v is not None}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(30.0, 2.0 * self.settings.binding_lease_seconds)
        delay = 0.2
        while True:
            try:
                job = await self._read_job(binding)
                if not self._mine(job, binding):
                    return  # a newer attempt or an undo: a stale report would change nothing, so send none
                patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]}, "status": {"report": body}}
                await self.client.patch(kubeclient.AGENTJOBS, binding.job_name, patch, namespace=binding.job_namespace,
                                        subresource="status")
                return
            except kubeclient.NotFound:
                return
            except kubeclient.Conflict:
                continue  # someone wrote between our read and our patch: read again
            except kubeclient.Invalid as exc:
                if "result" not in body and len(body.get("message", "")) <= 1000:
                    raise
                logger.warning("report of %s refused (%s); sending it without its result", binding.name, exc.message)
                body = {k: v for k, v in body.items() if k != "result"}
                body["message"] = str(body.get("message", ""))[:1000]
            except (kubeclient.ApiError, OSError, asyncio.TimeoutError) as exc:
                if loop.time() + delay > deadline:
                    raise
                logger.warning("reporting %s failed (%s); retrying", binding.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def release(self, attempt: Attempt) -> None:
        binding = attempt.binding
        for _ in range(3):
            try:
                lease = await self.client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace)
            except kubeclient.NotFound:
                return
            if (lease.get("spec") or {}).get("holderIdentity") != self.settings.pod_name:
                return
            try:
                await self.client.patch(kubeclient.LEASES, binding.name, leases.release_patch(
                    resource_version=lease["metadata"]["resourceVersion"]), namespace=binding.namespace)
                return
            except (kubeclient.Conflict, kubeclient.NotFound):
                continue

    async def handle(self, attempt: Attempt) -> None:
        binding = attempt.binding
        renewer: asyncio.Task[None] | None = None
        try:
            job = await self.claim(attempt)
            if job is None:
                logger.info("binding %s is no longer ours; not running it", binding.name)
                return
            logger.info("claimed %s/%s attempt %d", binding.job_namespace, binding.job_name, binding.attempt)
            renewer = asyncio.create_task(self.renew_loop(attempt))
            try:
                report = await self.execute(attempt, job)
            except AttemptFailed as exc:
                report = {"outcome": exc.outcome, "reason": exc.reason, "message": exc.message[:4000]}
            except Exception as exc:  # a runner bug must not take the other slots down
                logger.exception("attempt %s failed inside the runner", binding.name)
                report = {"outcome": "InfraError", "reason": "RunnerError", "message": f"{type(exc).__name__}: {exc}"[:4000]}
            if attempt.lost:
                logger.info("lost the lease of %s; not reporting", binding.name)
                return
            logger.info("%s/%s attempt %d: %s %s %s", binding.job_namespace, binding.job_name, binding.attempt,
                        report["outcome"], report.get("reason", ""),
                        "" if report["outcome"] == "Succeeded" else report.get("message", ""))
            await self.report(attempt, report)
        except (kubeclient.ApiError, OSError) as exc:
            logger.warning("attempt %s: API trouble: %s", binding.name, exc)
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            with contextlib.suppress(kubeclient.ApiError, OSError):
                await self.release(attempt)
            self.attempts.pop(binding.name, None)
            self.wake.set()

    # --- process ---

    async def shutdown(self) -> None:
        self.draining = True
        with contextlib.suppress(kubeclient.ApiError, OSError):
            updated = await self.client.patch(kubeclient.LEASES, self.settings.pod_name,
                                              {"metadata": {"annotations": {leases.ANNOTATION_DRAINING: "true"}}},
                                              namespace=self.settings.namespace)
            self.heartbeat_version = updated["metadata"]["resourceVersion"]
        tasks = [a.task for a in self.attempts.values() if a.task is not None]
        if tasks:
            logger.info("draining: %d running jobs get %ds to finish", len(tasks), self.settings.shutdown_grace_seconds)
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for attempt in list(self.attempts.values()):
                attempt.stop_reason = "RunnerShutdown"
                attempt.stop.set()
            if pending:
                await asyncio.wait(pending, timeout=executing.KILL_GRACE_SECONDS + 10)
        if self.heartbeat_task is not None:  # else a last renewal could find the Lease gone and recreate it
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task
        with contextlib.suppress(kubeclient.ApiError, OSError):
            await self.client.delete(kubeclient.LEASES, self.settings.pod_name, namespace=self.settings.namespace)

    async def run(self, stop: asyncio.Event) -> None:
        orphans = executing.kill_orphans(self.pids)
        if orphans:
            logger.info("start-up: killed agents a previous run left behind: %s", orphans)
        missing = sorted(set(self.profiles) - set(self.agents))
        if missing:
            logger.info("not offering agent profiles whose command is not installed: %s", ", ".join(missing))
        swept = self.workspace.sweep()
        if swept:
            logger.info("start-up sweep removed: %s", ", ".join(swept))
        if self.gateway is not None:
            await self.gateway.start()
            logger.info("model gateway on %s for %s", self.gateway.url, ", ".join(sorted(self.gateway.upstreams)))
        await self.announce()
        informer = kubeclient.Informer(
            self.client, kubeclient.LEASES, namespace=self.settings.namespace,
            label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_BINDING},{constants.LABEL_POD}={self.settings.pod_name}",
            handler=self.on_binding,
        )
        self.heartbeat_task = heartbeat = asyncio.create_task(self.heartbeat_loop())
        async with informer.running():
            logger.info("runner %s of factory %s ready with %d slots", self.settings.pod_name, self.settings.factory, self.settings.slots)
            while not stop.is_set():
                self.wake.clear()
                # A slot freed up: bindings skipped while full are offered again.
                for lease in list(informer.cache.values()):
                    self.on_binding("MODIFIED", lease)
                waiter = asyncio.create_task(self.wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
            # The heartbeat goes on while draining: the pod is alive, just taking nothing new.
            try:
                await self.shutdown()
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                if self.gateway is not None:
                    await self.gateway.close()


def lock_work_dir(work_dir: pathlib.Path) -> Any:
    """Hold an exclusive lock on the work dir for the life of the process: a second runner on the
    same directory would sweep the first one's worktrees at start-up. The kernel drops the lock when
    the process dies, kill -9 included. Raises ValueError (a one-line error) when it is taken."""
    work_dir.mkdir(parents=True, exist_ok=True)
    handle = open(work_dir / ".runner.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ValueError(f"work dir {work_dir} is in use by another runner (pid {holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_sandbox(settings: config.RunnerSettings) -> None:
    """Fail closed: a runner whose agents would run unconfined without the pool saying so does not
    start. Raises ValueError (one line naming the setting)."""
    if settings.sandbox == "none":
        logger.warning("AGENT SANDBOX OFF (GIGAFACTORY_RUNNER_SANDBOX=none): agents run as the runner's user and can "
                       "read its ServiceAccount token, every job's worktree and credentials, and change the runner's git")
        return
    try:
        seconds = sandbox.Sandbox(mode=settings.sandbox, network=settings.sandbox_network == "shared").check()
    except sandbox.SandboxError as exc:
        raise ValueError(f"cannot build the agent sandbox ({exc}); give the pod what docs/security.md \"Agent sandbox\" "
                         f"lists, or opt the pool out with GIGAFACTORY_RUNNER_SANDBOX=none") from None
    logger.info("agent sandbox: namespaces (a sandbox starts in %.0f ms)", seconds * 1000)


async def main(settings: config.RunnerSettings) -> None:
    profiles.load(settings.profiles_file)  # a broken profiles file is reported before anything starts
    check_sandbox(settings)
    lock = lock_work_dir(pathlib.Path(settings.work_dir))  # noqa: F841 — held until the process ends
    client = kubeclient.Client.from_kubeconfig(settings.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Runner(settings, client).run(stop)
    finally:
        await client.close()
