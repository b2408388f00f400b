# The Gigafactory image: `gigafactory operator` and `gigafactory runner` (see charts/gigafactory).
# Build: docker build -t ghcr.io/gigafactory/gigafactory:0.1.0 .   (docs/operations.md)

# --- build: a venv from the runtime lock, then the package itself without resolving anything again ---
# requirements.lock holds the runtime dependencies only (no test tools, no embedded API server's),
# each pinned with the sha256 of its files: pip refuses any other bytes (--require-hashes). The
# package is built with the lock's setuptools (--no-build-isolation), not one fetched unchecked.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/gigafactory
COPY requirements.lock /src/requirements.lock
RUN /opt/gigafactory/bin/pip install --require-hashes -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/gigafactory/bin/pip install --no-deps --no-build-isolation /src \
    && /opt/gigafactory/bin/python -m compileall -q /opt/gigafactory

# --- the agent CLIs of the runner-agents target (below), each from the pins the tests run them at ---
# Claude Code and Codex: `npm ci` of tests/agents/package-lock.json (every package pinned with its sha512
# integrity; Claude Code's postinstall puts its platform's native binary in place). Both are native
# binaries: the runtime needs no Node.js.
FROM node:20-bookworm-slim AS agents-npm
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
COPY tests/agents/package.json tests/agents/package-lock.json /usr/local/lib/gigafactory-agents/npm/
RUN cd /usr/local/lib/gigafactory-agents/npm \
    && npm ci --no-audit --no-fund --loglevel error \
    && npm cache clean --force
# Aider: a virtual environment of its own (its dependencies pin what the runner's would not), at the path
# it keeps in the runtime image, from tests/agents/aider.lock: every dependency pinned and hashed.
FROM python:3.11-slim AS agents-aider
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY tests/agents/aider.lock /src/aider.lock
RUN python -m venv /usr/local/lib/gigafactory-agents/aider \
    && /usr/local/lib/gigafactory-agents/aider/bin/pip install --require-hashes -r /src/aider.lock \
    && /usr/local/lib/gigafactory-agents/aider/bin/python -m compileall -q /usr/local/lib/gigafactory-agents/aider

# --- runtime: the venv, git and ssh, a non-root user; nothing to build with ---
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="gigafactory" \
      org.opencontainers.image.description="Dispatches autonomous coding-agent jobs to pools of runner pods"
# git for the runner's mirrors and worktrees; ssh for repositories cloned over SSH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin gigafactory
COPY --from=build /opt/gigafactory /opt/gigafactory
# The root filesystem is read-only in the chart: bytecode was compiled at build time, and HOME
# (ssh known_hosts, git config) is the /tmp emptyDir.
ENV PATH=/opt/gigafactory/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 10001:10001
ENTRYPOINT ["gigafactory"]
CMD ["--help"]

# --- runner-agents: the runtime plus the pinned agent CLIs (docs/agents.md#the-runner-image) ---
# docker build --target runner-agents -t .../gigafactory-runner-agents:0.1.0 .
# Under /usr/local, which the agent sandbox shows read-only; no test tool, no Node.js, no compiler.
FROM runtime AS runner-agents
USER 0:0
COPY --from=agents-npm /usr/local/lib/gigafactory-agents/npm/node_modules /usr/local/lib/gigafactory-agents/npm/node_modules
COPY --from=agents-aider /usr/local/lib/gigafactory-agents/aider /usr/local/lib/gigafactory-agents/aider
RUN ln -s /usr/local/lib/gigafactory-agents/npm/node_modules/@anthropic-ai/claude-code/bin/claude.exe /usr/local/bin/claude \
    && ln -s "$(echo /usr/local/lib/gigafactory-agents/npm/node_modules/@openai/codex-linux-*/vendor/*/bin/codex)" /usr/local/bin/codex \
    && ln -s /usr/local/lib/gigafactory-agents/aider/bin/aider /usr/local/bin/aider \
    && claude --version && codex --version && aider --version
USER 10001:10001

# The default target: the runtime image, without the agent CLIs.
FROM runtime
