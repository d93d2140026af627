# zai-proxy container image.
#
# BASE_IMAGE: a Debian image with python3 (3.11, which requirements.lock is resolved for),
# python3-venv and ca-certificates. The default is the public Python slim image, so a plain
#   docker build -t zai-proxy:0.1.0 .
# works wherever a registry is reachable. Without one, .ci/steps/20-image.sh builds a base
# locally with debootstrap (Debian bookworm's python3 is 3.11) and passes it:
#   docker build --network host --build-arg BASE_IMAGE=zai-proxy-base:local \
#     --build-arg VERSION=0.1.0 --build-arg COMMIT="$(git rev-parse HEAD)" -t zai-proxy:0.1.0 .
# Dependencies come from requirements.lock only (exact versions, every file's hash checked);
# regenerate it with scripts/lock.sh.
# Optional pip settings for the build stage only (never in the final image):
#   --build-arg PIP_INDEX_URL=...               a package index other than pip's default
#   --secret id=pip-ca,src=/path/to/ca.pem      a CA bundle pip must trust (needs BuildKit/buildah)
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src
RUN python3 -m venv /opt/venv
# The locked dependencies first (their own layer: it changes only with the lock), hashes
# required; the build backend is in the lock too.
COPY requirements.lock ./
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    if [ -z "${PIP_INDEX_URL}" ]; then unset PIP_INDEX_URL; fi; \
    /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY zai_proxy ./zai_proxy
# Then the project itself, with nothing more from the index (the tiktoken encodings are package
# data), then pip and setuptools out of the venv: the final image installs nothing.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index . ; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/pip uninstall -y pip setuptools wheel; \
    /opt/venv/bin/python -c "import zai_proxy.cli, pathlib, zai_proxy as z; \
assert any(pathlib.Path(z.__file__).parent.joinpath('_encodings').iterdir())"

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_TIME=unknown
LABEL org.opencontainers.image.title="zai-proxy" \
      org.opencontainers.image.description="Reverse proxy for the Z.AI (GLM) API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${BUILD_TIME}"
SHELL ["/bin/sh", "-eu", "-c"]
RUN groupadd --gid 1000 zai \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /var/lib/zai-proxy \
       --shell /usr/sbin/nologin zai \
    && install -d -o 1000 -g 1000 -m 0750 /var/lib/zai-proxy
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    RATE_LIMIT_STATE_FILE=/var/lib/zai-proxy/ceiling.json \
    ZAI_PROXY_VERSION=${VERSION} \
    ZAI_PROXY_COMMIT=${COMMIT} \
    ZAI_PROXY_BUILD_TIME=${BUILD_TIME}
WORKDIR /var/lib/zai-proxy
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["zai-proxy"]
CMD ["serve"]
