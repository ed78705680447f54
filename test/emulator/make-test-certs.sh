#!/usr/bin/env bash
# make-test-certs.sh OUTDIR
# Creates throwaway TLS material for tests (EC P-256, valid 10 years):
#   ca.pem/ca.key               test CA
#   server.pem/server.key       CN=localhost, SAN DNS:localhost, IP:127.0.0.1, signed by the CA
#   untrusted.pem/untrusted.key self-signed CN=localhost (same SANs), unknown to any CA file
#   wronghost.pem/wronghost.key signed by the CA, only SAN DNS:wrong.example
# Idempotent: an existing, consistent set is kept as is.  Quiet unless it fails.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
OUT=$1
mkdir -p "$OUT"

FILES="ca.pem ca.key server.pem server.key untrusted.pem untrusted.key wronghost.pem wronghost.key"

complete=1
for f in $FILES; do [ -s "$OUT/$f" ] || complete=0; done
if [ "$complete" = 1 ] &&
   openssl verify -CAfile "$OUT/ca.pem" "$OUT/server.pem" "$OUT/wronghost.pem" >/dev/null 2>&1 &&
   openssl verify -CAfile "$OUT/untrusted.pem" "$OUT/untrusted.pem" >/dev/null 2>&1; then
  exit 0
fi

TMP=$(mktemp -d "${OUT%/}/.certs.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
umask 077

log=openssl.log
run() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "make-test-certs.sh: failed: $*" >&2; exit 1; }; }
genkey() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
serial() { echo "0x$(openssl rand -hex 8)"; }

# Test CA
genkey ca.key
run openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=dfend emulator test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out ca.pem

# Leaf signed by the test CA: leaf NAME CN SAN
leaf() {
  local name=$1 cn=$2 san=$3
  genkey "$name.key"
  run openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  cat >"$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
  run openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -set_serial "$(serial)" \
    -days 3650 -sha256 -extfile "$name.ext" -out "$name.pem"
}
leaf server localhost "DNS:localhost,IP:127.0.0.1"
leaf wronghost wrong.example "DNS:wrong.example"

# Self-signed server certificate from an unknown CA
genkey untrusted.key
run openssl req -x509 -new -key untrusted.key -sha256 -days 3650 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "extendedKeyUsage=serverAuth" \
  -out untrusted.pem

chmod 600 ./*.key
chmod 644 ./*.pem
for f in $FILES; do mv -f "$f" "$OUT/$f"; done
