# prompttap: the recording proxy and its inspector in one image.
#
#   docker build -t prompttap .
#   docker run --rm -p 127.0.0.1:8787:8787 -p 127.0.0.1:8788:8788 \
#     -e PROMPTTAP_UI_TOKEN=... -v prompttap_data:/data prompttap
#
# The default command binds both ports on 0.0.0.0 (inside the container), so the inspector
# needs a token: set PROMPTTAP_UI_TOKEN (or pass --ui-token). The data folder (spool, embedded
# store, rejected records) is /data; keep it on a volume or captures not yet drained are lost
# with the container.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (see .dockerignore): no tests, no local data, no .env.
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY inspector ./inspector
COPY schemas ./schemas
COPY prompttap ./prompttap

RUN python -m venv /opt/prompttap \
    && /opt/prompttap/bin/pip install . \
    && /opt/prompttap/bin/prompttap --version


FROM python:3.11-slim

LABEL org.opencontainers.image.title="prompttap" \
      org.opencontainers.image.description="See exactly what your LLM apps send to the model" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/prompttap/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROMPTTAP_HOME=/data

COPY --from=build /opt/prompttap /opt/prompttap

RUN groupadd --system --gid 10001 prompttap \
    && useradd --system --uid 10001 --gid prompttap --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin prompttap \
    && mkdir -p /data \
    && chown prompttap:prompttap /data

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# 8787: the proxy (apps point their base URL here); 8788: the inspector.
EXPOSE 8787 8788

# slim has no curl: ask the proxy's own health endpoint with the standard library.
# Liveness only: /_prompttap/healthz answers 200 while the proxy serves traffic, so a sink that is
# down (Langfuse, the store) never makes Docker restart a proxy that works; no answer is unhealthy.
# Monitor /_prompttap/readyz for recording problems. The URL assumes the default --listen port 8787.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8787/_prompttap/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# SIGTERM (docker stop) makes prompttap stop accepting, finish in-flight exchanges and drain.
STOPSIGNAL SIGTERM
ENTRYPOINT ["prompttap"]
CMD ["serve", "--listen", "0.0.0.0:8787", "--ui", "0.0.0.0:8788"]
