# PostgreSQL from Debian's own package, on the same local Debian base as the worker image, for
# compose/multi-host.yaml (a demonstration and its smoke test, not a production database: in
# production the store is an operator's PostgreSQL).
#
#   docker build -f compose/postgres.Dockerfile --build-arg BASE_IMAGE=local/python-base -t avalon-postgres:local compose
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/avalon-postgres
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
VOLUME ["/var/lib/avalon-postgres"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint.sh"]
