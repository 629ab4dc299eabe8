#!/usr/bin/env bash
# Writes the seed corpus under fuzz/seeds/<target>/ (committed; run again only to change it).
# Needs openssl, python3 and zstd. Certificates are made here, with a 100-year validity.
set -euo pipefail
cd "$(dirname "$0")"
S=seeds
rm -rf "$S"
mkdir -p "$S"/{pull_decode,api_bodies,csr,agent_data_multipart,auth_header,apply_file,import,daemon_config,enroll_file,agent_socket}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
UUID=1b4e28ba-2fa1-4d2b-883f-0016d3cca427
OUT=$'<<<check_mk>>>\nVersion: 2.3.0\nAgentOS: linux\n<<<uptime>>>\n12345.67 54321.00\n'
printf '%s' "$OUT" >"$T/out"

# --- key material: site CA, agent key + certificate (CN = UUID), CSRs ---
ssl() { openssl "$@" 2>/dev/null; }
ssl ecparam -name prime256v1 -genkey -noout -out "$T/ca.key"
ssl req -x509 -new -key "$T/ca.key" -subj "/CN=Site 'fuzz' local CA" -days 36500 -out "$T/ca.pem"
ssl ecparam -name prime256v1 -genkey -noout -out "$T/agent.key"
ssl req -new -key "$T/agent.key" -subj "/CN=$UUID" -out "$T/agent.csr"
ssl x509 -req -in "$T/agent.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 36500 -out "$T/agent.pem"
ssl pkcs8 -topk8 -nocrypt -in "$T/agent.key" -out "$T/agent.p8"
ssl req -new -key "$T/agent.key" -subj "/CN=not-the-uuid" -out "$T/other.csr"
ssl genrsa -out "$T/rsa2048.key" 2048
ssl req -new -key "$T/rsa2048.key" -subj "/CN=$UUID" -out "$T/rsa2048.csr"
ssl genrsa -out "$T/rsa1024.key" 1024
ssl req -new -key "$T/rsa1024.key" -subj "/CN=$UUID" -out "$T/rsa1024.csr"

python3 - "$T" "$S" "$UUID" <<'PY'
import base64, json, os, subprocess, sys, zlib
T, S, UUID = sys.argv[1:]
rd = lambda n: open(os.path.join(T, n)).read()
out = open(os.path.join(T, "out"), "rb").read()
zst = subprocess.run(["zstd", "-q", "-c", "-3"], input=out, capture_output=True, check=True).stdout
def w(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    open(os.path.join(S, target, name), "wb").write(data)

# pull_decode: version 00 00, compression byte, payload
w("pull_decode", "none", b"\0\0\0" + out)
w("pull_decode", "zlib", b"\0\0\1" + zlib.compress(out, 1))
w("pull_decode", "zstd", b"\0\0\2" + zst)
w("pull_decode", "not-agent-output", b"\0\0\1" + zlib.compress(b"hello"))

ca, cert, key = rd("ca.pem"), rd("agent.pem"), rd("agent.p8")
sec_key = rd("agent.key")  # "EC PRIVATE KEY", as Checkmk's registry holds it
csr = rd("agent.csr")

# api_bodies: selector byte, then the JSON body
api = [
    (0, "register_existing", {"uuid": UUID, "csr": csr, "host_name": "web-01.example.com"}),
    (1, "register_new", {"uuid": UUID, "csr": csr, "agent_labels": {"cmk/hostname": "web01", "os": "linux"}}),
    (2, "renew", {"csr": csr}),
    (3, "register_existing_response", {"root_cert": ca, "agent_cert": cert, "connection_mode": "pull-agent", "tether": {"fetcher_zstd": True}}),
    (4, "ongoing_success", {"status": "Success", "agent_cert": cert, "connection_mode": "push-agent"}),
    (4, "ongoing_declined", {"status": "Declined", "reason": "not here"}),
    (5, "status_v2", {"status": "Registered", "hostname": "web01", "connection_mode": "pull-agent"}),
    (5, "status_v1", {"hostname": "web01", "type": "push-agent", "status": "READY"}),
    (6, "error_422", {"detail": [{"loc": ["body"], "msg": "field required", "type": "value_error"}]}),
]
for sel, name, body in api:
    w("api_bodies", name, bytes([sel]) + json.dumps(body).encode())
w("api_bodies", "names", bytes([7]) + UUID.encode())
w("api_bodies", "fingerprint", bytes([7]) + b"sha256:" + b"ab" * 32)

# csr: 0 + PEM text, 1 + DER (the target wraps it in PEM)
def der(pem):
    b = "".join(l for l in pem.splitlines() if not l.startswith("-----"))
    return base64.b64decode(b)
w("csr", "ec-pem", b"\0" + csr.encode())
w("csr", "ec-der", b"\1" + der(csr))
w("csr", "rsa2048-der", b"\1" + der(rd("rsa2048.csr")))
w("csr", "rsa1024-der", b"\1" + der(rd("rsa1024.csr")))
w("csr", "wrong-cn-der", b"\1" + der(rd("other.csr")))

# agent_data_multipart: content type line, compression line, body
def mp(boundary, payload, extra=b""):
    return (extra + b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"monitoring_data\"; "
            b"filename=\"agent_data\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            + payload + b"\r\n--" + boundary + b"--\r\n")
bnd = b"tether-0123456789abcdef"
ct = b"multipart/form-data; boundary=" + bnd
w("agent_data_multipart", "zlib", ct + b"\nzlib\n" + mp(bnd, zlib.compress(out)))
w("agent_data_multipart", "zstd", ct + b"\nzstd\n" + mp(bnd, zst))
other = b"--" + bnd + b"\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n"
w("agent_data_multipart", "two-parts", ct + b"\nzlib\n" + mp(bnd, zlib.compress(out), other))

# auth_header
w("auth_header", "basic", "Basic " + base64.b64encode(b"automation:pass:word").decode())
w("auth_header", "token-id", "CMK-TOKEN 12:" + UUID)
w("auth_header", "token-name", "CMK-TOKEN fleet-web:" + UUID)
w("auth_header", "bearer", "Bearer abc")

# apply_file: 0 + YAML, 1 + JSON
yaml = """groups:
  - name: ops
    alias: Operations
roles:
  - name: registrar
    permissions: [agent_registration.register_managed_existing_host]
folders:
  - path: /linux
    contact_groups: [ops]
users:
  - name: automation
    role: registrar
    contact_groups: [ops]
    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$6Wc5hbvbOUxpNp6l6zUVE7Bn4d5eYyRb6Ls1vJ0xZ5E"
  - name: gone
    absent: true
hosts:
  - name: web01
    folder: /linux
    contact_groups: [ops]
    cluster: false
    mode: pull
    address: 10.0.0.5
    agent_port: 6556
  - name: old-host
    absent: true
rules:
  - name: linux
    match: {os: linux}
    action: create
    folder: /linux
    hostname_label: cmk/hostname
    mode: pull
  - name: no-windows
    match: {os: windows}
    action: decline
    reason: not on this site
  - name: rest
    action: hold
    folder: /incoming
tokens:
  - name: fleet-linux
    folder: /linux
    labels: {os: linux}
    max_uses: 500
    ttl: 30d
    secret_env: FLEET_SECRET
  - name: old-token
    absent: true
"""
w("apply_file", "example.yaml", b"\0" + yaml.encode())
w("apply_file", "example.json", b"\1" + json.dumps({
    "folders": [{"path": "/a/b"}],
    "hosts": [{"name": "h1", "folder": "/a/b", "mode": "push"}],
    "rules": [{"name": "r", "match": {"x": "*"}, "action": "create", "folder": "/a"}],
}).encode())

# import: tether bundle, Checkmk registry, one Checkmk connection
conn = {"uuid": UUID, "server": "monitor.example.com", "port": 8000, "site": "prod",
        "host_name": "web01", "mode": "pull-agent", "root_cert": ca, "agent_cert": cert,
        "private_key": key, "key_type": "ec", "trust": "fingerprint", "registered_at": 1700000000,
        "fetcher_zstd": True}
w("import", "bundle.json", json.dumps({"kind": "tether-connection-bundle", "version": 1, "connection": conn}))
cmk = {"uuid": UUID, "private_key": sec_key, "certificate": cert, "root_cert": ca}
w("import", "registered_connections.json", json.dumps(
    {"push": {}, "pull": {"monitor.example.com:8000/prod": cmk}, "pull_imported": []}))
w("import", "registered_connections-push.json", json.dumps(
    {"push": {"[2001:db8::1]:8000/prod": cmk}}))
w("import", "imported.json", json.dumps({"pull_imported": [cmk]}))
w("import", "connection.json", json.dumps(cmk))
PY

cp ../packaging/tether.toml.example "$S/daemon_config/example.toml"
printf '[pull]\nallowed_ip = ["10.1.0.0/16", "192.0.2.7", "::1"]\n[agent]\ncommand = ["/usr/bin/check_mk_agent", "-v"]\n' \
    >"$S/daemon_config/command.toml"
printf '[agent]\nfile = "/tmp/out.txt"\n[push]\njitter = 0.5\n' >"$S/daemon_config/file.toml"

cat >"$S/enroll_file/new.toml" <<'EOF'
server = "monitor.example.com:8000"
site = "prod"
trust_fingerprint = "sha256:abababababababababababababababababababababababababababababababab"
mode = "new"
token_file = "/etc/tether/enroll.token"
labels = { os = "linux", "cmk/hostname" = "web17" }
key_type = "ec"
EOF
cat >"$S/enroll_file/existing.toml" <<'EOF'
server = "[2001:db8::1]"
site = "prod"
root_ca = "/etc/tether/site-ca.pem"
mode = "existing"
host_name = "web01"
user = "automation"
password_file = "/etc/tether/automation.pw"
key_type = "rsa4096"
remove_credential = false
EOF

# agent_socket: peer (0 none, 1 + IPv4, 2 + IPv6), 2-byte limit (LE), agent output
python3 - "$S" "$T/out" <<'PY'
import sys
S, out = sys.argv[1], open(sys.argv[2], "rb").read()
lim = (4096).to_bytes(2, "little")
open(f"{S}/agent_socket/none", "wb").write(b"\0" + lim + out)
open(f"{S}/agent_socket/ipv4", "wb").write(b"\1" + bytes([10, 0, 0, 5]) + lim + out)
open(f"{S}/agent_socket/ipv6", "wb").write(b"\2" + bytes(15) + b"\1" + lim + out)
open(f"{S}/agent_socket/over-limit", "wb").write(b"\0" + (8).to_bytes(2, "little") + out)
PY
echo "seeds written to fuzz/$S"
