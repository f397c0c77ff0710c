# flowtel in a container: `docker compose up` builds this and runs `flowtel-cli run`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md schema.sql ./
COPY flowtel ./flowtel
COPY flowtel_cli ./flowtel_cli
RUN pip install . && rm -rf /src

# Not root: the ingestion needs no privilege (and the embedded PostgreSQL refuses root).
RUN useradd --create-home --uid 10001 flowtel
USER flowtel
WORKDIR /home/flowtel

# Prometheus metrics, when FLOWTEL_METRICS_PORT=9108 (docker-compose.yml sets it).
EXPOSE 9108

# SIGTERM (docker stop) ends the run cleanly: the last batch is committed or rolled back whole.
STOPSIGNAL SIGTERM
ENTRYPOINT ["flowtel-cli", "run"]
