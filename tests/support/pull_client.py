#!/usr/bin/env python3
"""Pulls from a tether daemon the way Checkmk's fetcher does, with OpenSSL (Python's ssl),
not with our own TLS stack. Prints one JSON line describing what it got."""
import argparse
import json
import socket
import ssl
import sys
import zlib


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--cert", required=True, help="client certificate (PEM)")
    p.add_argument("--key", required=True, help="client key (PEM)")
    p.add_argument("--ca", required=True, help="CA that signed the agent certificate")
    p.add_argument("--verify-name", default=None, help="expected name (default: SNI)")
    a = p.parse_args()

    sock = socket.create_connection((a.host, a.port), timeout=10)
    marker = b""
    while len(marker) < 2:
        chunk = sock.recv(2 - len(marker))
        if not chunk:
            break
        marker += chunk
    if marker != b"16":
        print(json.dumps({"ok": False, "stage": "marker", "got": marker.decode("latin1")}))
        return 1
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.load_verify_locations(a.ca)
    ctx.check_hostname = True
    try:
        tls = ctx.wrap_socket(sock, server_hostname=a.sni)
        data = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
        peer = tls.getpeercert()
    except (ssl.SSLError, OSError) as e:
        print(json.dumps({"ok": False, "stage": "tls", "error": str(e)}))
        return 2
    if len(data) < 3:
        print(json.dumps({"ok": False, "stage": "payload", "bytes": len(data)}))
        return 3
    version, comp, body = data[:2], data[2], data[3:]
    if comp == 1:
        out = zlib.decompress(body)
    elif comp == 0:
        out = body
    elif comp == 2:
        try:
            import zstandard
        except ImportError:
            print(json.dumps({"ok": False, "stage": "compression",
                              "error": "zstd payload but no zstandard module: "
                                       "pip install -r tests/integrations/requirements.txt"}))
            return 4
        out = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    else:
        print(json.dumps({"ok": False, "stage": "compression", "byte": comp}))
        return 4
    subject = dict(x[0] for x in peer.get("subject", ()))
    print(json.dumps({
        "ok": True,
        "version": version.hex(),
        "compression": comp,
        "wire_bytes": len(body),
        "bytes": len(out),
        "head": out[:40].decode("utf-8", "replace"),
        "peer_cn": subject.get("commonName"),
        "peer_serial": peer.get("serialNumber"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
