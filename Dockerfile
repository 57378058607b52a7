# syntax=docker/dockerfile:1
# One image for every OIX service; the `oix` command is the entry point:
#   docker run --rm oix:lab gateway run --agency LT-VSAT
# Built from the wheel; the final stage has no compilers and runs as a non-root user.
# Secrets (signing keys, SCRAM passwords, gateway tokens, database passwords) are never
# in the image: they are mounted at run time (see docker-compose.yml, deploy/k8s).

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY schemas ./schemas
COPY deploy/agreement.example.yaml ./deploy/agreement.example.yaml
COPY deploy/examples ./deploy/examples
COPY deploy/keys ./deploy/keys
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/oix \
 && /opt/oix/bin/pip install /wheels/oix-*.whl

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 oix \
 && useradd --system --uid 10001 --gid oix --home-dir /var/lib/oix --create-home oix
COPY --from=build /opt/oix /opt/oix
ENV PATH=/opt/oix/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OIX_DATA_DIR=/var/lib/oix \
    OIX_LOG_FORMAT=json
WORKDIR /var/lib/oix
USER 10001:10001
# 8080: a gateway's HTTP API (OIX_GATEWAY_PORT); 9464: the audit consumer's /metrics
# and /healthz (OIX_AUDIT_METRICS_PORT).
EXPOSE 8080 9464
ENTRYPOINT ["oix"]
CMD ["--help"]
