# The avalon-worker image: the worker and its pinned dependencies on a slim Python base.
#
#   docker build -t avalon-worker .
#   docker build --build-arg BASE_IMAGE=python:3.12-slim-bookworm@sha256:<digest> -t avalon-worker .
#
# Reproducible on purpose: the same base image (pin it by digest for a release), the same
# hash-checked requirements and the same source give the same files, and once the image is
# graminized (gsc/build-gsc-image.sh) the same files give the same MRENCLAVE, which is what a
# requester checks in the worker's quote.
#
# Package-index settings of the machine that builds (a mirror, an extra CA) come in as build
# arguments; they default to nothing and never end up in the final image's environment.

ARG BASE_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------------------------
# Build our own wheel with hash-checked build tools (no build isolation: nothing unpinned).
FROM ${BASE_IMAGE} AS wheel
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
# Fixed timestamps inside the wheel (and hash-based .pyc files below): see PEP 552 and
# https://reproducible-builds.org/docs/source-date-epoch/ ; any value from 1980 on works.
ARG SOURCE_DATE_EPOCH=1704067200
WORKDIR /build
COPY requirements/build.txt requirements/build.txt
COPY docker/pip-env.sh /build/pip-env.sh
RUN . /build/pip-env.sh \
 && python3 -m venv /build/venv \
 && /build/venv/bin/python -m pip install --require-hashes --no-deps -r requirements/build.txt
# README* and not README.md: the wheel's long description is optional for the image.
COPY pyproject.toml README* ./
COPY src ./src
RUN . /build/pip-env.sh \
 && /build/venv/bin/python -m pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /build/dist .

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG SOURCE_DATE_EPOCH=1704067200

LABEL org.opencontainers.image.title="avalon-worker" \
      org.opencontainers.image.description="EEA Off-Chain Trusted Compute v1.1 worker (ZMQ JSON-RPC), plain or under Gramine-SGX" \
      org.opencontainers.image.licenses="Apache-2.0"

# Into the interpreter's own site-packages, not a virtualenv: under Gramine (and GSC, which
# starts the interpreter through a symlink) a venv's pyvenv.cfg is not found and its
# site-packages silently drop off sys.path. PIP_BREAK_SYSTEM_PACKAGES is for bases whose Python
# is the distribution's (PEP 668); it changes nothing on the official python images.
COPY requirements/runtime.txt /tmp/avalon-worker/requirements.txt
COPY --from=wheel /build/dist/ /tmp/avalon-worker/dist/
COPY docker/pip-env.sh /tmp/avalon-worker/pip-env.sh
RUN . /tmp/avalon-worker/pip-env.sh \
 && export PIP_BREAK_SYSTEM_PACKAGES=1 \
 && python3 -m pip install --require-hashes --no-deps -r /tmp/avalon-worker/requirements.txt \
 && python3 -m pip install --no-deps --no-index /tmp/avalon-worker/dist/*.whl \
 && rm -rf /tmp/avalon-worker \
 && python3 -c "import avalon_worker._cli.main, coincurve, cryptography, zmq, psycopg, psycopg_pool"

# The app directory holds the workload registry (and any workload modules an operator adds
# next to it); under Gramine it is a trusted, measured directory. The state directory holds
# the worker's keys; under Gramine it is an encrypted mount sealed to the enclave.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/avalon-worker --shell /usr/sbin/nologin avalon \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/avalon-worker \
 && install -d -m 0755 /opt/avalon-worker \
 && python3 -c "from importlib import resources; print(resources.files('avalon_worker').joinpath('data/workloads.json').read_text(), end='')" \
        > /opt/avalon-worker/workloads.json \
 && chmod 0644 /opt/avalon-worker/workloads.json

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AVALON_WORKER_STATE_DIR=/var/lib/avalon-worker

VOLUME ["/var/lib/avalon-worker"]
EXPOSE 7777
WORKDIR /opt/avalon-worker
USER 10001:10001

# The interpreter is the entrypoint (not the avalon-worker script) because GSC measures and
# launches ENTRYPOINT[0] as the enclave's first binary, which must be an ELF executable.
ENTRYPOINT ["python3", "-m", "avalon_worker"]
CMD ["serve", "--bind", "tcp://*:7777", "--state-dir", "/var/lib/avalon-worker", \
     "--workloads", "/opt/avalon-worker/workloads.json"]
