# syntax=docker/dockerfile:1
# The region-latency-exporter image: the package and its dependencies in a virtual environment, run as a non-root
# numeric user, ready for a read-only root filesystem (the only writable path is the cache volume under $HOME).
#   docker build -t region-latency-exporter .
#   docker run --read-only -p 9720:9720 -v rle-cache:/home/exporter/.cache region-latency-exporter
# Its build steps are exercised without a container engine by tests/integration/test_dockerfile.py, which runs
# this file's own RUN lines (see docs/DEPLOY.md).

# -- build: install the package and its dependencies (all wheels) into a virtual environment --------------------
# The base image, pinned to a patch version; both stages name the same one (a test checks it).
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/region-latency-exporter
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir ".[redis]" \
    && "$VIRTUAL_ENV/bin/pip" uninstall --yes setuptools pip \
    && "$VIRTUAL_ENV/bin/python" -c "import region_latency.cli, redis"

# -- runtime: the base image plus the environment; no compiler, no pip cache, no build tools ---------------------
FROM python:3.11.14-slim-bookworm
# VERSION follows region_latency.__version__ (a test checks it); SOURCE_URL: pass the repository's URL when building.
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/region-latency-exporter/region-latency-exporter
LABEL org.opencontainers.image.title="region-latency-exporter" \
      org.opencontainers.image.description="Measures latency to AWS regional endpoints, ranks regions, exports to Prometheus and OpenTelemetry" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV VIRTUAL_ENV=/opt/region-latency-exporter \
    PATH=/opt/region-latency-exporter/bin:$PATH \
    HOME=/home/exporter \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
COPY --from=build /opt/region-latency-exporter /opt/region-latency-exporter
# An empty config file means the built-in defaults (docs/CONFIG.md); mount your own over it.
RUN groupadd --gid 65532 exporter \
    && useradd --uid 65532 --gid 65532 --no-log-init --home-dir /home/exporter --shell /usr/sbin/nologin exporter \
    && install -d -o 65532 -g 65532 -m 0755 /home/exporter \
    && install -d -o 65532 -g 65532 -m 0700 /home/exporter/.cache \
    && install -d -m 0755 /etc/region-latency-exporter \
    && printf '# built-in defaults: see docs/CONFIG.md; mount a configuration over this file\n' \
       > /etc/region-latency-exporter/config.yaml
USER 65532:65532
WORKDIR /home/exporter
VOLUME ["/home/exporter/.cache"]
EXPOSE 9720
# No curl in the slim image: Python asks /-/healthy (HEALTHCHECK_URL overrides it when `listen` is not :9720).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:9720/-/healthy'), timeout=4)"]
ENTRYPOINT ["region-latency-exporter", "serve"]
CMD ["--config", "/etc/region-latency-exporter/config.yaml"]
