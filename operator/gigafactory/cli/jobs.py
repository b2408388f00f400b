"""User commands of the `gigafactory` CLI: submit, list, get, describe, explain, logs, cancel, retry, factories.

They find the cluster as kubectl does (--kubeconfig, else $KUBECONFIG, else ~/.kube/config, and the
context's namespace), and turn every API error into one clear line on stderr with exit code 1.
"""

import asyncio
import datetime
import io
import json
import os
import pathlib
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, NoReturn, TypeVar

import rich.console
import rich.table
import typer
import yaml

from gigafactory import config, consent, constants, kubeclient, leases
from gigafactory.cli import terminal
from gigafactory.dashboard import bodies
from gigafactory.models import agentjobs, factories, objects
from gigafactory.scheduling import queues

T = TypeVar("T")
# An attempt's logRef as runners write it: configmap/<namespace>/<name>, both DNS names.
LOG_REF = re.compile(r"configmap/(?P<namespace>[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)/"
                     r"(?P<name>[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)")

# Everything printed passes cli/terminal.py: text from jobs, agents and the API is shown, not obeyed.
console = rich.console.Console(file=terminal.stdout, highlight=False, soft_wrap=True, color_system=None)
errors = rich.console.Console(file=terminal.stderr, highlight=False, soft_wrap=True, color_system=None)

KubeconfigOption = Annotated[str | None, typer.Option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config).")]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: the context's).")]


def print_table(table: rich.table.Table) -> None:
    """A table as kubectl prints one: plain, every cell whole however narrow the terminal or pipe
    (rich would cut cells to 80 columns with "…" when stdout is not a terminal)."""
    plain = rich.console.Console(width=100_000, file=io.StringIO(), color_system=None, highlight=False, soft_wrap=True)
    plain.print(table)
    text = plain.file.getvalue()  # type: ignore[attr-defined]
    terminal.stdout.write("".join(line.rstrip() + "\n" for line in text.splitlines()))


def fail(message: str) -> NoReturn:
    errors.print(f"error: {message}", markup=False)
    raise typer.Exit(1)


def _kubeconfig_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return env or str(pathlib.Path.home() / ".kube" / "config")


def _context_namespace(path: str) -> str:
    try:
        data = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "default"
    current = data.get("current-context")
    for ctx in data.get("contexts") or []:
        if ctx.get("name") == current:
            return objects.text(objects.field(ctx, "context"), "namespace") or "default"
    return "default"


def _run(kubeconfig: str | None, action: Callable[[kubeclient.Client], Awaitable[T]]) -> T:
    path = _kubeconfig_path(kubeconfig)
    if not pathlib.Path(path).exists():
        fail(f"no kubeconfig at {path} (use --kubeconfig or set KUBECONFIG)")
    try:
        credentials = kubeclient.load_credentials(path)
    except Exception as exc:  # the loader raises many kinds for a broken file
        fail(f"cannot use kubeconfig {path}: {exc}")

    async def main() -> T:
        async with kubeclient.Client(credentials, user_agent="gigafactory-cli") as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except kubeclient.ApiError as exc:
        fail(exc.message or f"{exc.status} {exc.reason}")
    except OSError as exc:
        fail(f"cannot reach the API server at {credentials.server}: {exc}")


def _age(moment: datetime.datetime | None) -> str:
    return bodies.age(moment, now=datetime.datetime.now(tz=datetime.timezone.utc))


def _jobs_table(items: list[dict[str, Any]], *, all_namespaces: bool) -> rich.table.Table:
    table = rich.table.Table(box=None, pad_edge=False)
    columns = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "PHASE", "QUEUE", "FACTORY", "POD", "ATTEMPT", "AGE", "REASON"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for item in sorted(items, key=kubeclient.object_key):
        factory, pod = objects.placement(item)
        row = [
            objects.name(item),
            objects.phase(item),
            str(objects.spec(item).get("queue", "")),
            factory,
            pod,
            str(objects.job_status(item).get("attempt", 0)),
            _age(leases.parse_time(objects.meta(item).get("creationTimestamp"))),
            objects.phase_reason(item),
        ]
        table.add_row(*(([objects.namespace(item)] if all_namespaces else []) + row))
    return table


# Why an ended attempt kept no output, by its outcome.
_NO_OUTPUT = {
    agentjobs.Outcome.REJECTED.value: "the runner refused the job before starting the agent",
    agentjobs.Outcome.INFRA_ERROR.value: "its runner never reported on it, so no output was kept",
    agentjobs.Outcome.STOPPED.value: "it was stopped and its runner kept no output",
}


def _no_log(job: str, status: objects.JobStatus, records: list[Mapping[str, Any]], attempt: int | None) -> str:
    """One true line on why there is no log to show."""
    numbers = [r.get("attempt") for r in records]
    current = int(status.get("attempt") or 0)
    if attempt is not None and attempt not in numbers:
        if attempt == current and status.get("phase") in (agentjobs.Phase.BOUND.value, agentjobs.Phase.RUNNING.value):
            return f"no log yet for {job} attempt {attempt}: it is {status.get('phase')}; its output is kept when it ends"
        return f"no log kept for {job} attempt {attempt}: there is no such attempt" + (
            f" (attempts: {', '.join(str(n) for n in numbers)})" if numbers else " yet")
    if not records:
        phase = status.get("phase") or agentjobs.Phase.PENDING.value
        return f"no log kept for {job}: it is {phase} and no attempt has ended yet; an attempt's output is kept when it ends"
    record = next(r for r in reversed(records) if attempt is None or r.get("attempt") == attempt)
    outcome = str(record.get("outcome") or "")
    why = _NO_OUTPUT.get(outcome, "its runner kept no output")
    detail = ": ".join(str(part) for part in (record.get("reason"), record.get("message")) if part)
    return f"no log kept for {job} attempt {record.get('attempt')}: it ended {outcome}" + (f" ({detail})" if detail else "") + f"; {why}"


def _read_manifests(source: str, label: str) -> list[dict[str, Any]]:
    """The AgentJobs of a YAML file (or stdin): every non-empty document; a YAML error names the file and line."""
    try:
        text = sys.stdin.read() if source == "-" else pathlib.Path(source).read_text()
    except OSError as exc:
        fail(f"cannot read {label}: {exc.strerror or exc}")
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark is not None else label
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        fail(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else ""))
    if not documents:
        fail(f"{label} holds no manifest")
    for index, doc in enumerate(documents, start=1):
        where = label + (f" (document {index})" if len(documents) > 1 else "")
        if not isinstance(doc, dict):
            fail(f"{where}: not a manifest (a YAML mapping with apiVersion, kind, metadata and spec)")
        if doc.get("kind") != constants.AGENTJOB_KIND or doc.get("apiVersion") != constants.API_VERSION:
            fail(f"{where}: kind {doc.get('kind')!r} of {doc.get('apiVersion')!r} is not an AgentJob of {constants.API_VERSION}")
    return documents


async def _validate(client: kubeclient.Client, body: dict[str, Any], namespace: str) -> list[str]:
    """What the API server says is wrong with the job, every error at once: a dry-run create with strict
    field validation. kube-apiserver stops at unknown fields, so a second dry run (ignoring them) adds the
    schema's errors."""
    path = kubeclient.AGENTJOBS.path(namespace=namespace)
    found: list[str] = []
    for validation in ("Strict", "Ignore"):
        try:
            await client.request("POST", path, body=body, params={"fieldValidation": validation, "dryRun": "All"})
            return found
        except kubeclient.ApiError as exc:
            if exc.status == 400 and "strict decoding error:" in exc.message:
                detail = exc.message.split("strict decoding error:", 1)[1].strip()
                found += sorted(re.findall(r'(?:unknown|duplicate) field "[^"]*"', detail)) or [detail]
                continue
            causes = objects.items(objects.field(exc.body, "details").get("causes"))
            if exc.status != 422 or not causes:
                raise
            for cause in sorted(causes, key=lambda c: str(c.get("field") or "")):
                field, message = cause.get("field") or "", cause.get("message") or cause.get("reason") or ""
                found.append(f"{field}: {message}" if field else message)
            return found
    return found


def queue_position(job: dict[str, Any], pending: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(position, length) of a pending job in its queue (scheduling.queues.position, as the dashboard shows it)."""
    aging = config.OperatorSettings.model_fields["aging_seconds_per_point"].default
    return queues.position(job, pending, now=datetime.datetime.now(tz=datetime.timezone.utc), aging_seconds_per_point=aging)


def register(app: typer.Typer) -> None:
    """Add the user commands to the `gigafactory` app."""

    @app.command()
    def submit(
        file: Annotated[str | None, typer.Argument(help="AgentJob manifests (YAML, one or more documents); - reads stdin. Or use the flags.",
                                                   metavar="FILE", show_default=False)] = None,
        filename: Annotated[str | None, typer.Option("--filename", "-f", help="The same as FILE, as kubectl spells it.")] = None,
        name: Annotated[str | None, typer.Option(help="Job name (with flags).")] = None,
        repo: Annotated[str | None, typer.Option(help="Repository URL (with flags).")] = None,
        prompt: Annotated[str | None, typer.Option(help="The task (with flags).")] = None,
        profile: Annotated[str, typer.Option(help="Agent profile (with flags).")] = "script",
        queue: Annotated[str, typer.Option(help="Queue (with flags).")] = "default",
        base_ref: Annotated[str, typer.Option("--base-ref", help="Start from this ref (with flags).")] = "main",
        namespace: NamespaceOption = None,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Submit AgentJobs from a file (or stdin) or one from flags. The API server validates every
        document first, strictly (an unknown field is an error), and nothing is created unless all pass."""
        if file is not None and filename is not None:
            fail("give the manifest either as FILE or as -f, not both")
        source = file if file is not None else filename
        if source is not None:
            label = "<stdin>" if source == "-" else source
            manifests = _read_manifests(source, label)
        elif name and repo and prompt:
            label = "flags"
            manifests = [{
                "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND, "metadata": {"name": name},
                "spec": {"queue": queue, "repo": {"url": repo, "baseRef": base_ref}, "task": {"prompt": prompt}, "agent": {"profile": profile}},
            }]
        else:
            fail("give a manifest file (or - for stdin), or --name, --repo and --prompt")
        path = _kubeconfig_path(kubeconfig)
        default_ns = namespace or _context_namespace(path)
        targets = [(namespace or objects.namespace(body) or default_ns, body) for body in manifests]

        async def send(client: kubeclient.Client) -> list[str]:
            problems: list[str] = []
            for index, (ns, body) in enumerate(targets, start=1):
                found = await _validate(client, body, ns)
                if found:
                    where = f"{label}" + (f" (document {index})" if len(targets) > 1 else "")
                    problems.append(f"{where}: agentjob {ns}/{objects.name(body) or '?'} is invalid:")
                    problems.extend(f"  {line}" for line in found)
            if problems:
                return problems
            for ns, body in targets:
                created = await client.request("POST", kubeclient.AGENTJOBS.path(namespace=ns), body=body,
                                               params={"fieldValidation": "Strict"})
                console.print(f"agentjob {ns}/{created['metadata']['name']} submitted", markup=False)
            return []

        problems = _run(kubeconfig, send)
        if problems:
            errors.print("error: " + "\n".join(problems), markup=False)
            raise typer.Exit(1)

    @app.command("list")
    def list_(
        namespace: NamespaceOption = None,
        all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Jobs of every namespace.")] = False,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """List AgentJobs as a table."""
        ns = None if all_namespaces else (namespace or _context_namespace(_kubeconfig_path(kubeconfig)))
        items, _ = _run(kubeconfig, lambda c: c.list(kubeclient.AGENTJOBS, namespace=ns))
        print_table(_jobs_table(items, all_namespaces=all_namespaces))

    @app.command()
    def get(
        name: str,
        output: Annotated[str, typer.Option("--output", "-o", help="table, yaml or json")] = "table",
        namespace: NamespaceOption = None,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Show one AgentJob."""
        ns = namespace or _context_namespace(_kubeconfig_path(kubeconfig))
        obj = _run(kubeconfig, lambda c: c.get(kubeclient.AGENTJOBS, name, namespace=ns))
        if output == "yaml":
            terminal.stdout.write(yaml.safe_dump(obj, sort_keys=False))
        elif output == "json":
            terminal.stdout.write(json.dumps(obj, indent=2) + "\n")
        elif output == "table":
            print_table(_jobs_table([obj], all_namespaces=False))
        else:
            fail(f"unknown output format {output!r} (table, yaml or json)")

    @app.command()
    def describe(name: str, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None) -> None:
        """Describe an AgentJob: spec, conditions, attempts, result."""
        ns = namespace or _context_namespace(_kubeconfig_path(kubeconfig))
        obj = _run(kubeconfig, lambda c: c.get(kubeclient.AGENTJOBS, name, namespace=ns))
        job = agentjobs.AgentJob.model_validate(obj)
        spec, status = job.spec, job.status
        console.print(f"Name:      {ns}/{name}", markup=False)
        console.print(f"Phase:     {status.phase.value}   attempt {status.attempt}", markup=False)
        console.print(f"Queue:     {spec.queue}   priority {spec.priority}", markup=False)
        console.print(f"Repo:      {spec.repo.url} @ {spec.repo.base_ref}", markup=False)
        console.print(f"Agent:     {spec.agent.profile}", markup=False)
        if spec.agent.limits is not None:
            limits = spec.agent.limits
            caps = [f"{what} {value:g}" if isinstance(value, float) else f"{what} {value}"
                    for what, value in (("requests", limits.requests), ("tokens", limits.tokens), ("cost", limits.cost)) if value is not None]
            console.print(f"Limits:    {', '.join(caps) or 'none'} per attempt", markup=False)
        if status.tokens is not None or status.cost is not None:
            spent = f"{status.tokens or 0} tokens"
            if status.cost is not None:
                spent += f", estimated cost {status.cost:.6f} (at the factories' prices)"
            console.print(f"Spent:     {spent}, every attempt so far", markup=False)
        if status.assignment:
            a = status.assignment
            console.print(f"Bound to:  {a.factory}/{a.pod} (score {a.score})", markup=False)
        if status.conditions:
            console.print("Conditions:")
            for c in status.conditions:
                console.print(f"  {c.type:<10} {c.status.value:<6} {c.reason:<16} {c.message}", markup=False)
        if status.attempts:
            console.print("Attempts:")
            for rec in status.attempts:
                where = f"{rec.factory or '-'}/{rec.pod or '-'}" + (f" (score {rec.score})" if rec.score is not None else "")
                console.print(f"  #{rec.attempt} {rec.outcome.value:<12} {rec.reason:<14} {where} {rec.message}", markup=False)
                for used in rec.tokens:  # the runner's model gateway's count, priced by the operator
                    cost = f", estimated cost {used.cost:.6f}" if used.cost is not None else ", no price"
                    console.print(f"      tokens {used.model}: {used.input_tokens} in, {used.output_tokens} out, "
                                  f"{used.requests} requests{cost}", markup=False)
                if rec.cost is not None:
                    console.print(f"      estimated cost of the attempt: {rec.cost:.6f}", markup=False)
        if status.result:
            r = status.result
            console.print(f"Result:    {r.branch} @ {r.commit[:12]} ({r.diffstat.files_changed} files, "
                          f"+{r.diffstat.insertions} -{r.diffstat.deletions})", markup=False)

    @app.command()
    def explain(name: str, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None) -> None:
        """Why a job waits (counts per reason), or why it landed where it did (the score breakdown)."""
        ns = namespace or _context_namespace(_kubeconfig_path(kubeconfig))
        obj = _run(kubeconfig, lambda c: c.get(kubeclient.AGENTJOBS, name, namespace=ns))
        job = agentjobs.AgentJob.model_validate(obj)
        status = job.status
        if status.assignment:
            a = status.assignment
            console.print(f"{ns}/{name} is {status.phase.value} on {a.factory}/{a.pod} with score {a.score}/100:", markup=False)
            table = rich.table.Table("PLUGIN", "SCORE", box=None, pad_edge=False)
            for plugin, value in sorted(a.scores.items(), key=lambda kv: -kv[1]):
                table.add_row(plugin, str(value))
            print_table(table)
            return
        scheduled = objects.condition(obj, constants.ConditionType.SCHEDULED.value) or {}
        if status.phase in agentjobs.TERMINAL_PHASES:
            last = status.attempts[-1] if status.attempts else None
            detail = (": last attempt " + " ".join(part for part in (last.outcome.value, last.reason, last.message) if part)) if last else ""
            console.print(f"{ns}/{name} is {status.phase.value}{detail}", markup=False)
            if last is not None and last.factory:
                score = f" with score {last.score}/100" if last.score is not None else ""
                console.print(f"attempt {last.attempt} ran on {last.factory}/{last.pod or '-'}{score}" + (":" if last.scores else ""),
                              markup=False)
                if last.scores:
                    table = rich.table.Table("PLUGIN", "SCORE", box=None, pad_edge=False)
                    for plugin, value in sorted(last.scores.items(), key=lambda kv: -kv[1]):
                        table.add_row(plugin, str(value))
                    print_table(table)
        elif job.spec.suspend:
            console.print(f"{ns}/{name} is suspended (spec.suspend): it is not scheduled until resumed.", markup=False)
        else:
            if scheduled:
                console.print(f"{ns}/{name} is {status.phase.value}: {scheduled.get('reason', '')}: {scheduled.get('message', '')}", markup=False)
            else:
                console.print(f"{ns}/{name} is {status.phase.value}: the operator has not considered it yet.", markup=False)

            async def pending_jobs(client: kubeclient.Client) -> list[dict[str, Any]]:
                try:  # the whole queue spans namespaces; fall back to this one without the right to list them all
                    return (await client.list(kubeclient.AGENTJOBS))[0]
                except kubeclient.ApiError:
                    return (await client.list(kubeclient.AGENTJOBS, namespace=ns))[0]

            place = queue_position(obj, _run(kubeconfig, pending_jobs))
            if place is not None:
                console.print(f"position {place[0]} of {place[1]} in queue {job.spec.queue}", markup=False)

    @app.command()
    def logs(
        name: str,
        attempt: Annotated[int | None, typer.Option(help="Which attempt (default: the latest that kept a log).")] = None,
        namespace: NamespaceOption = None,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Print the tail of the agent's output that the runner kept for an attempt."""
        ns = namespace or _context_namespace(_kubeconfig_path(kubeconfig))

        async def fetch(client: kubeclient.Client) -> str:
            job = await client.get(kubeclient.AGENTJOBS, name, namespace=ns)
            status, records = objects.job_status(job), objects.attempt_records(job)
            refs = [(r.get("attempt"), r.get("logRef"), r.get("pod")) for r in records if r.get("logRef")]
            if attempt is not None:
                refs = [ref for ref in refs if ref[0] == attempt]
            if not refs:
                fail(_no_log(f"{ns}/{name}", status, records, attempt))
            number, log_ref, pod = refs[-1]
            ref = LOG_REF.fullmatch(str(log_ref))
            if ref is None:  # written by a runner: anything at all, as far as this command knows
                fail(f"attempt {number} of {ns}/{name} has a malformed log reference {str(log_ref)[:200]!r} "
                     "(expected configmap/NAMESPACE/NAME)")
            # A runner wrote the reference: show a log only where its name and labels bind it to the
            # attempt's pod and this job (a runner can name, or make, no other pod's log).
            if consent.parse_log_ref(log_ref, pod=pod) is None:
                fail(f"attempt {number} of {ns}/{name} names a log that is not its pod's ({str(log_ref)[:200]!r}, pod {str(pod)[:100]!r}): not shown")
            cm = await client.get(kubeclient.CONFIGMAPS, ref["name"], namespace=ref["namespace"])
            if not consent.log_belongs(cm, pod=str(pod), job_uid=objects.uid(job)):
                fail(f"log {ref['namespace']}/{ref['name']} of attempt {number} of {ns}/{name} is not labelled as this job's "
                     f"on pod {str(pod)[:100]!r}: not shown")
            return objects.text(objects.data(cm), "output")

        terminal.stdout.write(_run(kubeconfig, fetch))

    @app.command()
    def cancel(name: str, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None) -> None:
        """Cancel a job: a running attempt is stopped; the job ends Cancelled without retries."""
        ns = namespace or _context_namespace(_kubeconfig_path(kubeconfig))

        async def request(client: kubeclient.Client) -> str:
            for _ in range(5):
                job = await client.get(kubeclient.AGENTJOBS, name, namespace=ns)
                phase = objects.phase(job)
                if phase in {p.value for p in agentjobs.TERMINAL_PHASES}:
                    fail(f"agentjob {ns}/{name} is {phase}: it has finished, there is nothing to cancel"
                         + (" (gigafactory retry runs it again)" if phase != agentjobs.Phase.SUCCEEDED.value else ""))
                if objects.spec(job).get("cancel"):
                    return f"agentjob {ns}/{name} ({phase}): cancel was already requested"
                # With the resourceVersion read: a job that finishes meanwhile is read again, not cancelled for nothing.
                patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]}, "spec": {"cancel": True}}
                try:
                    await client.patch(kubeclient.AGENTJOBS, name, patch, namespace=ns)
                except kubeclient.Conflict:
                    continue
                return f"agentjob {ns}/{name} ({phase}) cancel requested"
            fail(f"agentjob {ns}/{name} keeps changing; try again")

        console.print(_run(kubeconfig, request), markup=False)

    @app.command()
    def retry(name: str, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None) -> None:
        """Run a Failed or Cancelled job again, with a fresh attempt budget (its history stays)."""
        ns = namespace or _context_namespace(_kubeconfig_path(kubeconfig))

        async def request(client: kubeclient.Client) -> str:
            job = await client.get(kubeclient.AGENTJOBS, name, namespace=ns)
            phase = objects.phase(job)
            if phase not in ("Failed", "Cancelled"):
                fail(f"agentjob {ns}/{name} is {phase}: only a Failed or Cancelled job can be retried"
                     + (" (submit a new job to run it again)" if phase == "Succeeded" else ""))
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            # One write: the request, un-cancelling, and the resourceVersion seen (so a concurrent change is not overwritten).
            patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"],
                                  "annotations": {constants.ANNOTATION_RETRY: stamp}},
                     "spec": {"cancel": False}}
            await client.patch(kubeclient.AGENTJOBS, name, patch, namespace=ns)
            return phase

        phase = _run(kubeconfig, request)
        console.print(f"agentjob {ns}/{name} ({phase}) retry requested: it goes back to the queue with a fresh attempt budget",
                      markup=False)

    @app.command("factories")
    def factories_(kubeconfig: KubeconfigOption = None) -> None:
        """The fleet: factories, their pods, slots and heartbeats."""

        async def fleet(client: kubeclient.Client) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], datetime.datetime],
                                                            dict[tuple[str, str, str], str]]:
            items, _ = await client.list(kubeclient.FACTORIES)
            # A heartbeat's age comes from the runner's heartbeat Lease itself (the Factory status does not
            # carry it: it would be rewritten on every renewal); without the right to list Leases, from the status.
            renewed: dict[tuple[str, str, str], datetime.datetime] = {}
            sandboxes: dict[tuple[str, str, str], str] = {}
            try:
                heartbeat_leases, _ = await client.list(kubeclient.LEASES, label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_HEARTBEAT}")
            except kubeclient.ApiError:
                heartbeat_leases = []
            for lease in heartbeat_leases:
                beat = leases.parse_heartbeat(lease)
                moment = leases.renewed_at(lease)
                if beat is not None and moment is not None:
                    # By namespace too: a Lease of the same name elsewhere (which the operator ignores) is not this pod's.
                    renewed[(beat.factory, beat.namespace, beat.pod)] = moment
                if beat is not None:
                    sandboxes[(beat.factory, beat.namespace, beat.pod)] = beat.sandbox
            return items, renewed, sandboxes

        items, renewed, sandboxes = _run(kubeconfig, fleet)
        # SANDBOX: how the pod's agents are isolated, as its runner announced it; "none" means they can read
        # every job's worktree and credentials on that pod (docs/security.md, "Agent sandbox").
        table = rich.table.Table("FACTORY", "PHASE", "POD", "READY", "SLOTS", "RUNNING", "SANDBOX", "HEARTBEAT", box=None,
                                 pad_edge=False)
        for item in sorted(items, key=lambda i: i["metadata"]["name"]):
            fac = factories.Factory.model_validate(item)
            name = item["metadata"]["name"]
            if not fac.status.pods:
                table.add_row(name, fac.status.phase.value, "-", "", "", "", "", "")
            for pod in fac.status.pods:
                moment = renewed.get((name, pod.namespace or "", pod.name)) or pod.last_heartbeat
                beat = _age(moment) + " ago" if moment else "never"
                table.add_row(name, fac.status.phase.value, pod.name, "yes" if pod.ready else "no",
                              str(pod.slots), str(pod.running), sandboxes.get((name, pod.namespace or "", pod.name)) or "?", beat)
        print_table(table)
