#!/usr/bin/env bash
# Make a private certificate authority, a broker certificate and, optionally, client
# certificates for mosquitto's TLS listener. Keys are EC P-256 (fast on a Raspberry Pi).
#
#   make-certs.sh --out DIR --host broker.local [--host NAME]... [--ip 192.168.1.10]...
#                 [--client NAME]... [--days 825] [--owner mosquitto]
#
# Re-running reuses DIR/ca.key and DIR/ca.crt (so certificates already given to clients stay
# valid) and re-issues the others. Clients need only ca.crt; keep ca.key offline if you can.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
die() { echo "make-certs.sh: $*" >&2; exit 1; }

out="" days=825 owner=""
hosts=() ips=() clients=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --host) hosts+=("${2:?--host needs a name}"); shift 2 ;;
    --ip) ips+=("${2:?--ip needs an address}"); shift 2 ;;
    --client) clients+=("${2:?--client needs a name}"); shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --owner) owner="${2:?--owner needs a user}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "make-certs.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required"
[ ${#hosts[@]} -gt 0 ] || [ ${#ips[@]} -gt 0 ] || die "name the broker with --host NAME and/or --ip ADDRESS (clients check it)"
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
case "$days" in ''|*[!0-9]*) die "--days must be a whole number, not $days" ;; esac

mkdir -p "$out"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
  newkey "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/CN=edge-gru MQTT CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$out/ca.crt"
  echo "made CA $out/ca.crt"
fi

# issue NAME EXTENSIONS: DIR/NAME.key and DIR/NAME.crt signed by the CA
issue() {
  local name="$1" cn="$2" ext="$3"
  newkey "$out/$name.key"
  openssl req -new -key "$out/$name.key" -subj "/CN=$cn" -out "$work/$name.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid:always" "$ext" > "$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -CAserial "$work/ca.srl" -days "$days" -sha256 -extfile "$work/$name.ext" -out "$out/$name.crt" 2>/dev/null
  echo "made $out/$name.crt (CN=$cn)"
}

san=""
for h in "${hosts[@]+"${hosts[@]}"}"; do san="${san:+$san,}DNS:$h"; done
for i in "${ips[@]+"${ips[@]}"}"; do san="${san:+$san,}IP:$i"; done
first="${hosts[0]:-${ips[0]}}"
issue server "$first" "$(printf 'extendedKeyUsage=serverAuth\nsubjectAltName=%s' "$san")"

for c in "${clients[@]+"${clients[@]}"}"; do
  case "$c" in *[!A-Za-z0-9._-]*|'') die "client name $c: use letters, digits, '.', '_' and '-'" ;; esac
  issue "client-$c" "$c" "extendedKeyUsage=clientAuth"
done

chmod 0644 "$out"/*.crt
chmod 0600 "$out"/*.key
if [ -n "$owner" ]; then
  chown "$owner" "$out/server.key" "$out/server.crt" "$out/ca.crt"
fi
echo "broker: cafile $out/ca.crt, certfile $out/server.crt, keyfile $out/server.key"
