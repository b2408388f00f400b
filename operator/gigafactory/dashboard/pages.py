"""The dashboard's HTML, rendered on the server, with every value escaped by construction.

Every value shown came from a job, an agent or the API: hostile text. Markup is built only by
`fmt()`, whose template is a constant of this module and whose arguments are escaped unless they are
`Markup` that `fmt()` itself made. So a prompt or a log line holding `<script>` shows as text. Control
characters (terminal escapes, bidi overrides) are shown as visible escapes, as the CLI shows them.
The page loads no script or style but the dashboard's own (`/static/`), and the Content-Security-
Policy (serving.py) forbids any other, inline ones included.
"""

import html
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from gigafactory.dashboard import views

# C0 controls but \t and \n, DEL, C1 controls, and the bidi embeddings, overrides and isolates (as cli/terminal.py).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class Markup(str):
    """HTML made by `fmt()`: constant templates with escaped values. Never build one from input."""


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def esc(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(_CONTROL.sub(_visible, "" if value is None else str(value)), quote=True))


def fmt(template: str, *args: Any, **kwargs: Any) -> Markup:
    """`template` (a constant) with each argument escaped; attribute values in it are always quoted."""
    return Markup(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[Markup]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def url(*segments: str, query: Mapping[str, str] | None = None) -> str:
    """A dashboard path: every segment percent-encoded, so a name cannot change the path or scheme."""
    path = "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


NAV = (("Fleet", "/"), ("Queues", "/queues"), ("Jobs", "/jobs"))


def document(*, title: str, page: str, body: Markup, topics: Iterable[str]) -> Markup:
    """The whole page. `<main>` is what the event stream refreshes; `data-topics` says which changes matter."""
    nav = join(fmt('<a href="{}"{}>{}</a>', href, Markup(' aria-current="page"') if name == page else Markup(""), name)
               for name, href in NAV)
    return fmt(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>{title} · Gigafactory</title><link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head>'
        '<body data-topics="{topics}"><header><strong>Gigafactory</strong><nav>{nav}</nav>'
        '<span id="live" class="live" title="live updates">connecting</span></header>'
        '<main id="main">{body}</main></body></html>\n',
        title=title, topics=",".join(topics), nav=nav, body=body)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, css: str = "") -> Markup:
    head = join(fmt("<th>{}</th>", h) for h in headers)
    body = join(fmt("<tr>{}</tr>", join(fmt("<td>{}</td>", cell) for cell in row)) for row in rows)
    return fmt('<table class="{}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', css, head, body)


def _phase(phase: str) -> Markup:
    return fmt('<span class="phase phase-{}">{}</span>', phase.lower(), phase)


def _link_job(namespace: str, name: str) -> Markup:
    return fmt('<a href="{}">{}</a>', url("jobs", namespace, name), name)


# ---- Fleet ---------------------------------------------------------------------------------------


def fleet(data: views.Fleet) -> Markup:
    totals = fmt(
        '<section class="totals"><div><b>{}</b> factories</div><div><b>{}/{}</b> pods ready</div>'
        '<div><b>{}/{}</b> slots used</div>{}</section>',
        len(data.factories), data.ready_pods, data.total_pods, data.slots_used, data.slots_total,
        join(fmt('<div><b>{}</b> {}</div>', count, phase) for phase, count in data.jobs_by_phase.items() if count))
    rows = [
        (fmt("<b>{}</b>", f.name), _phase(f.phase), f"{f.ready_pods}/{f.total_pods}", f"{f.slots_used}/{f.slots_total}",
         f.heartbeat, ", ".join(f.capabilities) or "-", ", ".join(f.agents), ", ".join(f.subscriptions), ", ".join(f.states) or "-")
        for f in data.factories
    ]
    table = _table(["Factory", "Phase", "Ready pods", "Slots used", "Heartbeat", "Capabilities", "Agents", "Queues", "State"],
                   rows, css="factories")
    pods = join(
        fmt('<h3>{}</h3>{}', f.name, _table(["Pod", "Namespace", "Ready", "Slots", "Running", "Heartbeat"],
                                            [(p.name, p.namespace, "yes" if p.ready else "no", p.slots, p.running, p.heartbeat)
                                             for p in f.pods]))
        for f in data.factories if f.pods)
    empty = fmt('<p class="empty">No factories yet.</p>') if not data.factories else Markup("")
    return fmt("<h1>Fleet</h1>{}{}{}<h2>Runner pods</h2>{}", totals, table, empty, pods or fmt('<p class="empty">None.</p>'))


# ---- Queues --------------------------------------------------------------------------------------


def _chart(buckets: tuple[tuple[int, int], ...]) -> Markup:
    """Attempts ended per bucket of the last hour: succeeded (green) on failed (red). Inline SVG with
    presentation attributes only (no style attribute, which the CSP forbids)."""
    width, height, bar = 12 * len(buckets), 40, 10
    top = max([s + f for s, f in buckets] + [1])
    bars = []
    for index, (succeeded, failed) in enumerate(buckets):
        x = index * 12
        ok, bad = round(height * succeeded / top), round(height * failed / top)
        bars.append(fmt('<rect class="ok" x="{}" y="{}" width="{}" height="{}"></rect>', x, height - ok, bar, ok))
        bars.append(fmt('<rect class="bad" x="{}" y="{}" width="{}" height="{}"></rect>', x, height - ok - bad, bar, bad))
    label = f"attempts ended per {views.BUCKET_MINUTES} minutes over the last hour"
    return fmt('<svg class="chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img"><title>{}</title>'
               '<line x1="0" y1="{}" x2="{}" y2="{}" class="axis"></line>{}</svg>',
               width, height + 1, width, height + 1, label, height + 0.5, width, height + 0.5, join(bars))


def queues(rows: tuple[views.QueueRow, ...]) -> Markup:
    table = _table(
        ["Queue", "Pending", "Bound or running", "Oldest wait", "Succeeded (1 h)", "Failed (1 h)", "Last hour"],
        [(fmt('<a href="{}">{}</a>', url("jobs", query={"queue": r.name}), r.name),
          fmt('<a href="{}">{}</a>', url("jobs", query={"queue": r.name, "phase": "Pending"}), r.pending),
          r.active, r.oldest_wait or "-", r.succeeded_hour, r.failed_hour, _chart(r.buckets)) for r in rows],
        css="queues")
    empty = fmt('<p class="empty">No jobs yet.</p>') if not rows else Markup("")
    return fmt("<h1>Queues</h1>{}{}", table, empty)


# ---- Jobs ----------------------------------------------------------------------------------------


def _select(name: str, label: str, options: Iterable[str], chosen: str) -> Markup:
    opts = join(fmt('<option value="{}"{}>{}</option>', value, Markup(" selected") if value == chosen else Markup(""), value or "all")
                for value in ("", *options))
    return fmt('<label>{} <select name="{}">{}</select></label>', label, name, opts)


def jobs(data: views.JobList, filters: views.Filters) -> Markup:
    form = fmt(
        '<form class="filters" method="get" action="/jobs">{}{}{}{}'
        '<label>Name <input type="search" name="q" value="{}" placeholder="search"></label>'
        '<button type="submit">Filter</button></form>',
        _select("namespace", "Namespace", data.namespaces, filters.namespace),
        _select("queue", "Queue", data.queues, filters.queue),
        _select("phase", "Phase", views.PHASES, filters.phase),
        _select("factory", "Factory", data.factories, filters.factory),
        filters.search)
    table = _table(
        ["Namespace", "Name", "Phase", "Reason", "Queue", "Priority", "Factory", "Pod", "Attempt", "Age"],
        [(r.namespace, _link_job(r.namespace, r.name), _phase(r.phase), r.reason, r.queue, r.priority, r.factory or "-",
          r.pod or "-", r.attempt, r.age) for r in data.rows],
        css="jobs")
    pager = []
    if data.page > 1:
        pager.append(fmt('<a rel="prev" href="{}">← newer</a>', url("jobs", query=filters.query(page=data.page - 1))))
    pager.append(fmt("<span>page {} of {} · {} jobs</span>", data.page, data.pages, data.total))
    if data.page < data.pages:
        pager.append(fmt('<a rel="next" href="{}">older →</a>', url("jobs", query=filters.query(page=data.page + 1))))
    return fmt('<h1>Jobs</h1>{}<p class="pager">{}</p>{}', form, join(pager), table)


# ---- Job -----------------------------------------------------------------------------------------


def _dl(pairs: Iterable[tuple[str, Any]]) -> Markup:
    return fmt('<dl>{}</dl>', join(fmt("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in pairs))


def _breakdown(scores: tuple[tuple[str, int], ...]) -> Markup:
    if not scores:
        return Markup("")
    return fmt('<ul class="scores">{}</ul>', join(fmt("<li>{}: <b>{}</b></li>", k, v) for k, v in scores))


def job(detail: views.JobDetail, *, log: str | None, log_note: str) -> Markup:
    head = fmt('<h1>{} <small>{}</small> {}</h1><p class="explain">{}{}</p>', detail.name, detail.namespace, _phase(detail.phase),
               detail.explanation,
               fmt(" · position {} of {} in queue {}", detail.position[0], detail.position[1], detail.queue)
               if detail.position else Markup(""))
    spec = fmt('<section><h2>Spec</h2>{}<h3>Prompt</h3><pre class="prompt">{}</pre></section>', _dl(detail.spec), detail.prompt)
    timeline = join(
        fmt('<li class="attempt{}"><div class="when">#{} · {}{}</div><div>{} {}{}</div><div class="where">{}/{}{}</div>'
            '<div class="msg">{}</div>{}</li>',
            Markup(" current") if a.current else Markup(""), a.attempt, a.started or "-",
            fmt(" → {} ({})", a.finished, a.duration) if a.finished else (fmt(" · for {}", a.duration) if a.duration else Markup("")),
            _phase(a.outcome) if a.outcome else Markup(""), a.reason,
            fmt(" · exit {}", a.exit_code) if a.exit_code else Markup(""), a.factory or "-", a.pod or "-",
            fmt(" · score {}/100", a.score) if a.score else Markup(""), a.message, _breakdown(a.scores))
        for a in detail.attempts)
    attempts = fmt('<section><h2>Attempts</h2><ol class="timeline">{}</ol>{}</section>', timeline,
                   fmt('<p class="empty">None yet.</p>') if not detail.attempts else Markup(""))
    conditions = fmt("<section><h2>Conditions</h2>{}</section>",
                     _table(["Type", "Status", "Reason", "Message", "Since"], detail.conditions))
    result = Markup("")
    if detail.result:
        r = detail.result
        diffstat, changed = r.get("diffstat"), r.get("changedFiles")
        stat: Mapping[str, Any] = diffstat if isinstance(diffstat, Mapping) else {}
        files: list[Any] = changed if isinstance(changed, list) else []
        result = fmt('<section><h2>Result</h2>{}<h3>Changed files</h3><pre>{}</pre><h3>Summary</h3><pre class="summary">{}</pre></section>',
                     _dl([("Branch", r.get("branch", "")), ("Commit", r.get("commit", "")),
                          ("Diffstat", f"{stat.get('filesChanged', 0)} files, +{stat.get('insertions', 0)} "
                                       f"-{stat.get('deletions', 0)}")]),
                     "\n".join(str(f) for f in files[:200]), r.get("summary", ""))
    log_section = fmt('<section><h2>Log tail</h2><p class="note">{}</p>{}</section>', log_note,
                      fmt('<pre class="log">{}</pre>', log) if log is not None else Markup(""))
    return join([head, spec, attempts, result, conditions, log_section])


def not_found(what: str) -> Markup:
    return fmt('<h1>Not found</h1><p>{}</p><p><a href="/jobs">All jobs</a></p>', what)
