#!/usr/bin/env bash
# PostgreSQL init script (docker-entrypoint-initdb.d, first start only): the roles
# the audit store's append-only rule needs. The database and its tables belong to
# oix_owner (POSTGRES_USER; `oix audit migrate` creates the tables as it); the audit
# consumer logs in as oix_audit, which `oix audit migrate --grant oix_audit` lets
# INSERT and SELECT and nothing else. The liaison services log in as oix_liaison,
# which owns one database per agency (liaison_<agency>: each agency's store apart, so
# one agency's service can never read another's) and migrates it at start.
# Passwords come from the mounted secret files.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v audit_password="$(cat /run/secrets/pg-audit-password)" \
  -v liaison_password="$(cat /run/secrets/pg-liaison-password)" <<'SQL'
CREATE ROLE oix_audit LOGIN PASSWORD :'audit_password';
REVOKE ALL ON DATABASE oix FROM PUBLIC;
GRANT CONNECT ON DATABASE oix TO oix_audit;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO oix_audit;
CREATE ROLE oix_liaison LOGIN PASSWORD :'liaison_password';
CREATE DATABASE liaison_lt_vsat OWNER oix_liaison;
CREATE DATABASE liaison_lv_vrs OWNER oix_liaison;
CREATE DATABASE liaison_pl_sg OWNER oix_liaison;
CREATE DATABASE liaison_ee_ppa OWNER oix_liaison;
CREATE DATABASE liaison_ua_dpsu OWNER oix_liaison;
REVOKE ALL ON DATABASE liaison_lt_vsat, liaison_lv_vrs, liaison_pl_sg, liaison_ee_ppa,
  liaison_ua_dpsu FROM PUBLIC;
SQL
