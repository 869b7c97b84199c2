#!/bin/sh
# Create the cluster on first start (database and role `avalon`, password from
# AVALON_DB_PASSWORD, scram-sha-256 only), then run PostgreSQL in the foreground on
# ${AVALON_DB_LISTEN:-127.0.0.1}:${AVALON_DB_PORT:-5432}.
set -eu
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
data=/var/lib/avalon-postgres/data
if [ ! -s "$data/PG_VERSION" ]; then
    : "${AVALON_DB_PASSWORD:?set AVALON_DB_PASSWORD}"
    pwfile="$(mktemp)"
    printf '%s\n' "$AVALON_DB_PASSWORD" > "$pwfile"
    "$bin/initdb" -D "$data" -U avalon --pwfile="$pwfile" --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    "$bin/postgres" --single -D "$data" postgres <<SQL >/dev/null
CREATE DATABASE avalon OWNER avalon;
SQL
    echo "postgres-entrypoint: created the cluster and the database avalon"
fi
exec "$bin/postgres" -D "$data" -c listen_addresses="${AVALON_DB_LISTEN:-127.0.0.1}" -p "${AVALON_DB_PORT:-5432}" \
    -c unix_socket_directories=/tmp
