# The Gigafactory image: `gigafactory operator` and `gigafactory runner` (see charts/gigafactory).
# Build: docker build -t ghcr.io/gigafactory/gigafactory:0.1.0 .   (docs/operations.md)

# --- build: a venv from the pinned lock, then the package itself without resolving anything again ---
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/gigafactory
COPY requirements.lock /src/requirements.lock
RUN /opt/gigafactory/bin/pip install -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/gigafactory/bin/pip install --no-deps /src \
    && /opt/gigafactory/bin/python -m compileall -q /opt/gigafactory

# --- runtime: the venv, git and ssh, a non-root user; nothing to build with ---
FROM python:3.11-slim
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
