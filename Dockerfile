# First version of the image; the container-deployment issue hardens it further.
FROM python:3.11.7-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY settings.py server.py ./
COPY auth ./auth
COPY tools ./tools
COPY web ./web

RUN useradd --system --uid 10001 --home-dir /app app && mkdir -p /app/data && chown app /app/data
USER app

ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/healthz', timeout=2)"]
ENTRYPOINT ["python", "server.py"]
