#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d): one
# role and one database per service; each role owns its database and is the only one (besides
# the superuser) allowed to connect to it.
set -euo pipefail

# The values travel as psql variables, quoted by psql (:"name" an identifier, :'name' a literal),
# so that a password with a quote in it is a password, not SQL.
create() { # role database password
    psql -v ON_ERROR_STOP=1 -v role="$1" -v db="$2" -v password="$3" \
        --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE CONNECT ON DATABASE :"db" FROM PUBLIC;
SQL
}

create order_service order_service "${ORDER_DB_PASSWORD:?}"
create store_service store_service "${STORE_DB_PASSWORD:?}"
create delivery_service delivery_service "${DELIVERY_DB_PASSWORD:?}"
