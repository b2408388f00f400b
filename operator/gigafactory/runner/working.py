"""An attempt's work on the runner: the job's credentials and prompt, the mirror and a worktree,
the agent in its sandbox (behind the model gateway when the pool has one), the agent's commits taken
in as hostile input, the push; the report it makes. A branch an earlier attempt pushed and could not
report is adopted instead of run again.
"""

import logging
import os
import pathlib
import secrets
import tempfile
from typing import Any

import pydantic

from gigafactory import config, consent, constants, kubeclient, remotes
from gigafactory.models import agentjobs, objects
from gigafactory.runner import attempts, executing, gateway, profiles, sandbox, worktrees

logger = logging.getLogger(__name__)

LOG_CONFIGMAP_BYTES = executing.TAIL_BYTES  # far under the 1 MiB object limit


class Working(attempts.Claims):
    """What a runner does with an attempt it claimed, on the claims' Lease protocol."""

    def __init__(self, settings: config.RunnerSettings, client: kubeclient.Client) -> None:
        super().__init__(settings, client)
        self.workspace = worktrees.Workspace(pathlib.Path(settings.work_dir), network_timeout=settings.git_timeout_seconds,
                                             allow_local=settings.allow_local_repos,
                                             accept_new_host_keys=settings.ssh_accept_new_host_keys)
        self.profiles = profiles.load(settings.profiles_file)
        self.pids = self.workspace.root / "agents"
        self.pids.mkdir(exist_ok=True)
        upstreams = gateway.from_settings(settings)
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

    async def _secret(self, job: dict[str, Any]) -> remotes.Credentials:
        name = objects.text(objects.field(job, "spec", "repo"), "credentialsSecret")
        if not name:
            return remotes.Credentials()
        try:
            secret = await self.client.get(kubeclient.SECRETS, name, namespace=job["metadata"]["namespace"])
        except kubeclient.NotFound:
            raise attempts.AttemptFailed("Rejected", "SecretNotFound", f"Secret {name} not found in namespace {job['metadata']['namespace']}") from None
        try:  # before any connection: a Secret its owner did not mark for this host is sent nowhere
            consent.check_secret(secret, url=str(job["spec"]["repo"]["url"]))
        except consent.Refused as exc:
            raise attempts.AttemptFailed("Rejected", exc.reason, exc.message) from None
        return remotes.credentials_from_secret(consent.secret_data(secret))

    async def _prompt(self, job: dict[str, Any], spec: agentjobs.AgentJobSpec) -> str:
        if spec.task.prompt is not None:
            return spec.task.prompt
        ref = spec.task.prompt_from.config_map_key_ref  # type: ignore[union-attr]
        try:
            cm = await self.client.get(kubeclient.CONFIGMAPS, ref.name, namespace=job["metadata"]["namespace"])
        except kubeclient.NotFound:
            raise attempts.AttemptFailed("Rejected", "PromptNotFound", f"ConfigMap {ref.name} not found") from None
        text = objects.data(cm).get(ref.key)
        if not isinstance(text, str):
            raise attempts.AttemptFailed("Rejected", "PromptNotFound", f"ConfigMap {ref.name} has no key {ref.key}")
        return text

    async def execute(self, attempt: attempts.Attempt, job: dict[str, Any]) -> dict[str, Any]:
        """Prepare, run the agent, push; returns the report (without attempt/pod/finishedAt)."""
        try:
            parsed = agentjobs.AgentJob.model_validate(job)
            spec = parsed.spec
        except pydantic.ValidationError as exc:  # the schema should have refused it; a runner does not rely on that
            first = exc.errors()[0]
            where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
            raise attempts.AttemptFailed("Rejected", "InvalidSpec", f"{where}: {first['msg']}") from None
        profile = self.profiles.get(spec.agent.profile)
        if profile is None:
            raise attempts.AttemptFailed("Rejected", "ProfileUnknown", f"agent profile {spec.agent.profile!r} is not offered by this runner")
        # A job adds only what its profile allows (the chart's admission policy says so too; a runner
        # does not rely on it): no flag that overrides the profile's, no env that changes what runs.
        try:
            profile.check_args(spec.agent.args)
            profile.check_env(env.name for env in spec.agent.env)
        except profiles.NotAllowed as exc:
            raise attempts.AttemptFailed("Rejected", exc.reason, exc.message) from None
        if spec.agent.limits is not None and self.gateway is None:
            raise attempts.AttemptFailed("Rejected", "LimitsNotEnforced",
                                "spec.agent.limits: this runner has no model gateway to count what the agent spends")
        # The prices the operator copied into this binding from the factory (a runner cannot write them).
        model_prices = [price.model_dump(by_alias=True) for price in parsed.status.assignment.prices] if parsed.status.assignment else []
        if spec.agent.limits is not None and spec.agent.limits.cost is not None and not model_prices:
            raise attempts.AttemptFailed("Rejected", "LimitsNotEnforced",
                                         "spec.agent.limits.cost: the factory sets no model prices (spec.prices) to estimate the cost with")
        branch = spec.repo.branch or f"agent/{job['metadata']['name']}"
        try:
            remotes.check_url(spec.repo.url, allow_local=self.settings.allow_local_repos)
            remotes.check_ref(branch, what="branch")
        except remotes.GitFailure as exc:
            raise attempts.AttemptFailed(exc.outcome, exc.reason, exc.message) from None
        credentials = await self._secret(job)
        prompt = await self._prompt(job, spec)
        size = len(prompt.encode("utf-8", errors="replace"))
        if size > self.settings.max_prompt_bytes:
            raise attempts.AttemptFailed("Rejected", "PromptTooLarge",
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
                raise attempts.AttemptFailed("PushFailed", "BranchExists",
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
                    raise attempts.AttemptFailed("Rejected", "AgentNotRunnable", f"cannot start the agent: {exc}") from None
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
                    session = self.gateway.open(gateway.Limits(requests=limits.requests, tokens=limits.tokens, cost=limits.cost,
                                                                 prices=model_prices), exceeded)
                    env.update(self.gateway.env(session))  # a loopback URL and this attempt's token, never the key
                command = self.sandboxed(argv, env=env, checkout=checkout, prompt_file=prompt_file)
                try:
                    result = await executing.run(command.argv, cwd=str(workdir), env=command.env, timeout=profile.timeout_seconds,
                                                 stop=attempt.stop, label=label,
                                                 stdin=prompt.encode() if profile.stdin == "prompt" else None,
                                                 pid_file=self.pids / f"{attempt.name}.pid", pass_fds=command.pass_fds)
                except OSError as exc:
                    raise attempts.AttemptFailed("Rejected", "AgentNotRunnable", f"cannot start the agent: {exc}") from None
                finally:
                    command.close()
                    if session is not None and self.gateway is not None:
                        self.gateway.forget(session)
                        logger.info("[%s] model usage: %s", label, session.summary())
            failed = sandbox.failure(command, result.exit_code, result.tail)
            if failed == "setup":
                raise attempts.AttemptFailed("InfraError", "SandboxFailed", f"the agent's sandbox could not be built: {result.tail[-500:].strip()}")
            if failed == "exec":
                raise attempts.AttemptFailed("Rejected", "AgentNotRunnable", f"cannot start the agent: {result.tail[-500:].strip()}")
            log_ref = await self.save_log(attempt, job, result.tail)
            report: dict[str, Any] = {"outcome": result.outcome, "exitCode": result.exit_code, "logRef": log_ref}
            if session is not None and session.usage:
                report["tokens"] = [{"model": model[:256], "inputTokens": used.input, "outputTokens": used.output,
                                     "requests": used.requests} for model, used in sorted(session.usage.items())[:32]]
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
            raise attempts.AttemptFailed(exc.outcome, exc.reason, exc.message) from None
        finally:
            if mirror is not None:
                await self.workspace.remove_worktree(mirror, attempt.name)

    async def _adopt(self, job: dict[str, Any], mirror: pathlib.Path, branch: str, base_ref: str) -> dict[str, Any] | None:
        """The branch exists: if an earlier attempt of this job announced pushing exactly the commit the
        remote holds (and then went silent), that push is this job's result: report it, run nothing."""
        tip = await self.workspace.remote_tip(mirror, branch)
        earlier = [a for a in objects.attempts(job) if objects.pushed(a).get("branch") == branch and objects.pushed(a).get("commit") == tip]
        if tip is None or not earlier:
            return None
        base = await self.workspace.resolve_base(mirror, base_ref)
        described = await self.workspace.describe(mirror, base, tip)
        number = earlier[-1].get("attempt")
        summary = f"Adopted {branch} at {tip[:12]}, pushed by attempt {number} whose report was lost."
        logger.info("adopting %s at %s pushed by attempt %s", branch, tip[:12], number)
        return {"outcome": "Succeeded", "reason": "Adopted", "result": {"branch": branch, **described, "summary": summary},
                "message": f"adopted {branch} at {tip[:12]}: attempt {number} pushed it and was lost before reporting"}

    async def save_log(self, attempt: attempts.Attempt, job: dict[str, Any], tail: str) -> str | None:
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
