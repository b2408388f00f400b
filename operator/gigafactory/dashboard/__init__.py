"""The fleet dashboard: a read-only web UI of factories, queues and jobs, live.

`watching` keeps informer caches of AgentJobs, Factories and heartbeat Leases (watches, no polling)
and tells waiting pages when something changed; `views` turns those caches into what each page shows
(pure functions, no I/O); `pages` renders that as HTML in which every value is escaped; `serving` is
the aiohttp application (security headers, Server-Sent Events). Nothing here writes to the API.
Nothing imports this package but the CLI (`gigafactory dashboard`) and `gigafactory dev`.
"""
