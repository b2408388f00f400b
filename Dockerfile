# The Gigafactory image: `gigafactory operator` and `gigafactory runner` (see charts/gigafactory).
# Build: docker build -t ghcr.io/gigafactory/gigafactory:0.1.0 .
FROM python:3.11-slim AS build
RUN python -m venv /opt/gigafactory
COPY requirements.lock /src/requirements.lock
RUN /opt/gigafactory/bin/pip install --no-cache-dir -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/gigafactory/bin/pip install --no-cache-dir --no-deps /src

FROM python:3.11-slim
# git for the runner's mirrors and worktrees; ssh for repositories cloned over SSH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp gigafactory
COPY --from=build /opt/gigafactory /opt/gigafactory
ENV PATH=/opt/gigafactory/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001:10001
ENTRYPOINT ["gigafactory"]
