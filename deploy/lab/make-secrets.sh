#!/usr/bin/env bash
# Every secret docker-compose.yml mounts, generated for a LAB into deploy/lab/secrets/
# (git-ignored, never committed, never in the image). Run once before
# `docker compose up`; run again with --force to start over.
#
#   sudo deploy/lab/make-secrets.sh [--force]      (OIX_LAB_SECRETS=DIR: elsewhere)
#
# Makes:
#   tls/            the lab CA, a certificate per broker (kafka-1..3: SASL_SSL client
#                   listener, mTLS between brokers) and the admin client certificate
#                   (oix-admin: creates the SCRAM users and runs `oix provision`)
#   scram/<user>    one SCRAM-SHA-512 password per Kafka user: each agency's gateway
#                   (lt-vsat, lv-vrs, pl-sg, ee-ppa, ua-dpsu) and the audit consumer (oix-audit)
#   postgres/       passwords of the audit store's owner role (oix_owner), its service
#                   role (oix_audit) and the liaison stores' role (oix_liaison), and
#                   libpq password files for them
#   gateway-tokens.yaml   one bearer token per agency system, stored hashed; the
#                   tokens themselves are printed once, here, and nowhere else
#   liaison/        each agency's liaison service: its own gateway token (<agency>.token,
#                   the service publishes officers' answers with it) and the lab
#                   officers (officers.yaml, argon2 hashes; one officer `duty` per
#                   agency, whose password is printed once, here)
#
# Signing keys are not made here: the lab runs the example agreement, whose
# demo keys are deploy/keys (OIX_ENV=development). Production mounts each
# party's own key (`oix keys rotate PARTY`) and sets OIX_ENV=production.
#
# Compose mounts each secret file into the containers that need it, keeping the
# file's owner and mode; so run this as root (sudo): each file goes to the user
# id of the container that reads it, mode 400: 10001 (the OIX image), 1000 (the
# apache/kafka image's appuser), 999 (the postgres image). libpq refuses a
# password file that others may read, so 644 is no way out.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "run as root (sudo $0): the files are handed to the containers' users by uid" >&2
  exit 1
fi
OIX_UID=10001 KAFKA_UID=1000 PG_UID=999
own() {  # own UID FILE...: readable by that user only
  local uid=$1
  shift
  chown "$uid:$uid" "$@"
  chmod 400 "$@"
}

here=$(cd "$(dirname "$0")" && pwd)
out=${OIX_LAB_SECRETS:-$here/secrets}
agencies=(LT-VSAT LV-VRS PL-SG EE-PPA UA-DPSU)
oix=${OIX:-$(command -v oix || echo "$here/../../.venv/bin/oix")}

if [[ -e $out && ${1:-} != --force ]]; then
  echo "$out exists; pass --force to make new secrets (running stacks must be recreated)" >&2
  exit 1
fi
rm -rf "$out"
umask 077
mkdir -p "$out/scram" "$out/postgres" "$out/liaison"
chmod 700 "$out"

for broker in kafka-1 kafka-2 kafka-3; do
  bash "$here/make-certs.sh" "$out/tls" "$broker" "DNS:$broker" "DNS:localhost" >/dev/null
done
bash "$here/make-certs.sh" "$out/tls" oix-admin "DNS:oix-admin" >/dev/null
chmod 644 "$out/tls/ca.pem"
own "$KAFKA_UID" "$out"/tls/kafka-?.keystore.pem
# The admin certificate: kafka-configs.sh (Kafka's PEM keystore) and oix provision.
mv "$out/tls/oix-admin.keystore.pem" "$out/tls/oix-admin.kafka.pem"
own "$KAFKA_UID" "$out/tls/oix-admin.kafka.pem"
own "$OIX_UID" "$out/tls/oix-admin.pem" "$out/tls/oix-admin.key"

password() { openssl rand -base64 33 | tr -d '/+=\n' | head -c 40; }
for user in oix-audit "${agencies[@],,}"; do
  password > "$out/scram/$user"
done
# Each password is read by kafka-configs.sh (to create the user) and by the user's service.
for user in oix-audit "${agencies[@],,}"; do
  cp "$out/scram/$user" "$out/scram/$user.kafka"
  own "$KAFKA_UID" "$out/scram/$user.kafka"
  own "$OIX_UID" "$out/scram/$user"
done

password > "$out/postgres/owner-password"
password > "$out/postgres/audit-password"
password > "$out/postgres/liaison-password"
# libpq password files (host:port:database:user:password), read through PGPASSFILE.
printf 'postgres:5432:oix:oix_owner:%s\n' "$(cat "$out/postgres/owner-password")" \
  > "$out/postgres/owner.pgpass"
printf 'postgres:5432:oix:oix_audit:%s\n' "$(cat "$out/postgres/audit-password")" \
  > "$out/postgres/audit.pgpass"
# The liaison role owns one database per agency: any database name (*) of that host.
printf 'postgres:5432:*:oix_liaison:%s\n' "$(cat "$out/postgres/liaison-password")" \
  > "$out/postgres/liaison.pgpass"
own "$PG_UID" "$out/postgres/owner-password" "$out/postgres/audit-password" \
  "$out/postgres/liaison-password"
own "$OIX_UID" "$out/postgres/owner.pgpass" "$out/postgres/audit.pgpass" \
  "$out/postgres/liaison.pgpass"

if [[ -x $oix ]]; then
  for agency in "${agencies[@]}"; do
    token=$("$oix" gateway token create "$agency" --name "${agency,,}-system" \
      --tokens-file "$out/gateway-tokens.yaml" 2>/dev/null)
    echo "gateway token for $agency: $token"
    # The liaison service's own token for its agency's gateway (revocable apart).
    "$oix" gateway token create "$agency" --name "${agency,,}-liaison" \
      --tokens-file "$out/gateway-tokens.yaml" > "$out/liaison/${agency,,}.token" 2>/dev/null
    officer=$(OIX_LIAISON_OFFICERS_FILE="$out/liaison/officers.yaml" \
      "$oix" liaison officer add duty --as "$agency" 2>/dev/null)
    echo "liaison console officer duty of $agency: $officer"
  done
  own "$OIX_UID" "$out/gateway-tokens.yaml" "$out"/liaison/*
else
  echo "no oix command ($oix): run \`make .venv/.installed\` and this script again" >&2
  exit 1
fi
echo "lab secrets in $out"
