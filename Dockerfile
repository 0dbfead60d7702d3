# syntax=docker/dockerfile:1
# reson8-kafka worker image: `docker build -t reson8-kafka .`
#
# Runtime needs nothing beyond the slim Debian Python base: the PyAV wheel bundles its
# own FFmpeg (libavcodec/libavformat/... in av.libs/), as numpy does its BLAS; what
# those link from the system (libc, libm, libz, libstdc++, libgcc_s) is part of the
# base image. The import check at the end of the runtime stage proves it at build time.

ARG PYTHON_VERSION=3.11

# --- builder: build the wheel, install it with its dependencies into /opt/venv ----------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade "pip>=24" "wheel>=0.43" "setuptools>=68"
COPY pyproject.toml README.md ./
COPY workers ./workers
COPY schemas ./schemas
COPY topology ./topology
COPY emulator ./emulator
# Prefer wheels; the few pure-Python sdists (e.g. intervaltree) build without a compiler.
# A native dependency without a wheel for this platform fails here, loudly.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --prefer-binary /wheels/reson8_kafka-*.whl

# --- runtime -----------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="reson8-kafka" \
      org.opencontainers.image.description="Kafka-native streaming speech-to-text worker for Reson8" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric, non-root user (Kubernetes' runAsNonRoot can only verify numeric ids).
RUN groupadd --system --gid ${UID} reson8 \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /var/lib/reson8-kafka \
      --no-create-home --shell /usr/sbin/nologin reson8 \
 && mkdir -p /var/lib/reson8-kafka \
 && chown ${UID}:${UID} /var/lib/reson8-kafka
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/reson8-kafka
# Fail the build if a native library is missing from the slim base.
RUN python -c "import av, numpy, aiokafka, faust, workers.app, topology.cli; av.codec.Codec('opus', 'r')"
# Faust's data folder is .cache/faust/<app id> under the working directory; the Helm
# chart mounts a volume here (read-only root filesystem).
WORKDIR /var/lib/reson8-kafka
USER ${UID}:${UID}
EXPOSE 6066
# SIGTERM drains (RESON8_KAFKA_DRAIN_TIMEOUT_S); Kubernetes probes /healthz and /ready,
# so no HEALTHCHECK. `docker run IMAGE topics apply ...` runs the other commands.
ENTRYPOINT ["reson8-kafka"]
CMD ["worker"]
