# syntax=docker/dockerfile:1
# The MCP resource server: dependencies installed in a builder stage, copied into a slim runtime that runs
# as an unprivileged user. Configuration comes from the environment at run time (compose: env_file: .env);
# no secret and no .env is ever part of the image (see .dockerignore). Checked by hadolint in the tests.

# The newest Python 3.11 patch release; bump it here and in tests/test_dockerfile.py (NEWEST_PYTHON_311).
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Every package pinned, transitive ones included, each file checked against its sha256 (--require-hashes);
# --no-deps so nothing unpinned sneaks in, pip check to prove the set is complete.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps --requirement /tmp/requirements.lock \
    && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    NOTES_DB_PATH=/app/data/notes.db
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown 10001:10001 /app/data
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# The code stays owned by root: the server can read it, not change it.
COPY settings.py secret_files.py server.py ./
COPY auth ./auth
COPY tools ./tools
COPY web ./web
USER 10001:10001
EXPOSE 8000
VOLUME ["/app/data"]
# Liveness only: /healthz needs neither the IdP nor the database (/readyz is for the load balancer).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "server.py"]
CMD ["serve"]
