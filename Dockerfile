# tagproxy container image: a wheel built in one stage, installed into a
# virtual environment, and only that environment copied onto a slim base.
#
#   docker build -t tagproxy:0.1.0 .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 \
#       -e TAGPROXY_PUBLIC_URL=https://metrics.shop.example tagproxy:0.1.0
#
# Configuration is by TAGPROXY_* environment variables, one per `tagproxy
# serve` flag (see `tagproxy serve --help`). The bundled rules are baked in at
# /etc/tagproxy/rules; mount your own directory there to replace them.
# tests/test_deploy.py checks this file's invariants and runs its install and
# start commands in a fresh virtual environment.

# Pinned to an exact Python release and Debian version, the same in both
# stages so the virtual environment's interpreter path stays valid.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY deploy/docker/install.sh /usr/local/bin/tagproxy-install
RUN tagproxy-install /src /opt/tagproxy

FROM ${PYTHON_IMAGE}
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 tagproxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tagproxy
COPY --from=build /opt/tagproxy /opt/tagproxy
COPY rules /etc/tagproxy/rules

ENV PATH=/opt/tagproxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TAGPROXY_LISTEN=0.0.0.0:8080 \
    TAGPROXY_ADMIN_LISTEN=0.0.0.0:9090 \
    TAGPROXY_RULES=/etc/tagproxy/rules \
    TAGPROXY_LOG_FORMAT=json

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
# Liveness from the admin listener; Kubernetes uses its own probes instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "proxy.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tagproxy"]
CMD ["serve"]
