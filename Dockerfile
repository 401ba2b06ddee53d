# shipledger's production image: the [pipeline] extra only (API, Faust workers, ClickHouse
# sink, migrations, archive job; no embedded broker, no dev tools). One image, one process per
# container: the command picks the role (`api`, `worker`, `sink`, `migrate`, `topics create`,
# `archive --apply`). docs/deploy.md; checked by hadolint in `make lint`, never built here.
#   docker build -t shipledger:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with shipledger and its [pipeline] dependencies -------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md LICENSE ./
COPY shipledger/ shipledger/
COPY schemas/ schemas/
COPY producers/ producers/
COPY processors/ processors/
COPY sinks/ sinks/
COPY receivers/ receivers/
COPY deploy/ deploy/
# The versions are pyproject.toml's ranges; pin them further with a constraints file if wanted.
# hadolint ignore=DL3013
RUN python -m venv /opt/shipledger \
    && /opt/shipledger/bin/pip install --no-compile '.[pipeline]'

# --- runtime: the virtualenv alone, run as an unprivileged user ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 shipledger \
    && useradd --system --uid 10001 --gid shipledger --no-create-home \
        --home-dir /var/lib/shipledger --shell /usr/sbin/nologin shipledger \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/shipledger
COPY --from=build /opt/shipledger /opt/shipledger
# No .pyc at run time: the root filesystem is read-only (deploy/k8s, deploy/compose); the
# data dir (Faust's state, the API's token file) is a volume mounted on /var/lib/shipledger.
ENV PATH=/opt/shipledger/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHIPLEDGER_DATA_DIR=/var/lib/shipledger \
    SHIPLEDGER_LOG_FORMAT=json \
    SHIPLEDGER_API_HOST=0.0.0.0 \
    SHIPLEDGER_METRICS_HOST=0.0.0.0
WORKDIR /var/lib/shipledger
USER 10001:10001
# 8470 the API (/healthz, /readyz, /metrics); /metrics of a worker 9464, the sink 9465, the
# escalator 9466, the jobs 9467 (deploy/).
EXPOSE 8470 9464 9465 9466 9467
ENTRYPOINT ["shipledger"]
CMD ["--help"]
