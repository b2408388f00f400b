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
