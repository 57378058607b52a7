#!/usr/bin/env bash
# Lab TLS certificates with openssl: a private CA and certificates it signs.
# For a lab and for tests only: production certificates come from the
# agencies' own PKI. The output is never committed (.gitignore).
#
#   deploy/lab/make-certs.sh DIR NAME [SAN ...]
#
# Creates, in DIR (mode 700):
#   ca.pem, ca.key          the lab CA (made on the first call, reused after)
#   NAME.pem                NAME's certificate, signed by the CA (server and client use)
#   NAME.key                its private key, PKCS#8, unencrypted
#   NAME.keystore.pem       key + certificate + CA: a Kafka PEM keystore (ssl.keystore.type=PEM)
# SANs are openssl subjectAltName entries (DNS:kafka-1, IP:127.0.0.1);
# without any, the certificate names DNS:NAME. The subject is CN=NAME, which
# Kafka's ssl.principal.mapping.rules in docker-compose.yml turn into User:NAME.
#
# Keys are readable by their owner only; certificates and the keystore are 644
# inside the 700 directory (make-secrets.sh then hands each file to the user id
# of the container that reads it).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
dir=$1
name=$2
shift 2
sans=("$@")
if [[ ${#sans[@]} -eq 0 ]]; then
  sans=("DNS:$name")
fi
days=${OIX_LAB_CERT_DAYS:-365}

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

if [[ ! -f ca.key ]]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/O=OIX lab/CN=OIX lab CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem
  chmod 644 ca.pem
fi

san_line=$(IFS=,; echo "${sans[*]}")
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
openssl req -new -key "$name.key" -subj "/O=OIX lab/CN=$name" -out "$name.csr"
cat > "$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san_line
EOF
openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
  -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
rm -f "$name.csr" "$name.ext"
cat "$name.key" "$name.pem" ca.pem > "$name.keystore.pem"
chmod 644 "$name.pem" "$name.keystore.pem"
echo "$dir/$name.pem ($san_line), signed by $dir/ca.pem"
