#!/usr/bin/env bash
# PostgreSQL init script (docker-entrypoint-initdb.d, first start only): the roles
# the audit store's append-only rule needs. The database and its tables belong to
# oix_owner (POSTGRES_USER; `oix audit migrate` creates the tables as it); the audit
# consumer logs in as oix_audit, which `oix audit migrate --grant oix_audit` lets
# INSERT and SELECT and nothing else. Passwords come from the mounted secret files.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v audit_password="$(cat /run/secrets/pg-audit-password)" <<'SQL'
CREATE ROLE oix_audit LOGIN PASSWORD :'audit_password';
REVOKE ALL ON DATABASE oix FROM PUBLIC;
GRANT CONNECT ON DATABASE oix TO oix_audit;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO oix_audit;
SQL
