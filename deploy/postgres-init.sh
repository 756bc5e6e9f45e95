#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d): one
# role and one database per service; each role owns its database and is the only one (besides
# the superuser) allowed to connect to it.
set -euo pipefail

create() { # role database password
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE "$1" LOGIN PASSWORD '$3';
CREATE DATABASE "$2" OWNER "$1";
REVOKE CONNECT ON DATABASE "$2" FROM PUBLIC;
SQL
}

create order_service order_service "${ORDER_DB_PASSWORD:?}"
create store_service store_service "${STORE_DB_PASSWORD:?}"
create delivery_service delivery_service "${DELIVERY_DB_PASSWORD:?}"
