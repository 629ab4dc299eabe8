#!/usr/bin/env python3
"""Pulls from a tether daemon the way Checkmk's fetcher does, with OpenSSL (Python's ssl),
not with our own TLS stack. Prints one JSON line describing what it got.

With --seconds S it pulls again and again for S seconds (a full handshake each time, as
Checkmk's fetcher does) and prints how many pulls it made: benches/tether_bench.rs uses
this as its OpenSSL client."""
import argparse
import json
import socket
import ssl
import sys
import time
import zlib


def pull(ctx, host, port, sni):
    """One pull: marker, TLS, read to close_notify. Returns (stage, data, peer) where
    stage is None on success or names the step that failed."""
    sock = socket.create_connection((host, port), timeout=10)
    try:
        marker = b""
        while len(marker) < 2:
            chunk = sock.recv(2 - len(marker))
            if not chunk:
                break
            marker += chunk
        if marker != b"16":
            return "marker", marker, None
        try:
            tls = ctx.wrap_socket(sock, server_hostname=sni)
            data = bytearray()
            while True:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break
                data += chunk
            peer = tls.getpeercert()
            tls.close()
        except (ssl.SSLError, OSError) as e:
            return "tls", str(e), None
        return None, bytes(data), peer
    finally:
        sock.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--cert", required=True, help="client certificate (PEM)")
    p.add_argument("--key", required=True, help="client key (PEM)")
    p.add_argument("--ca", required=True, help="CA that signed the agent certificate")
    p.add_argument("--verify-name", default=None, help="expected name (default: SNI)")
    p.add_argument("--seconds", type=float, default=None,
                   help="pull repeatedly for this long; print the number of pulls")
    a = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.load_verify_locations(a.ca)
    ctx.check_hostname = True

    if a.seconds is not None:
        # Every pull must bring the same bytes as the first; any other outcome ends the loop.
        n, first, end = 0, None, time.monotonic() + a.seconds
        while time.monotonic() < end:
            stage, data, _ = pull(ctx, a.host, a.port, a.sni)
            if stage is not None or (first is not None and len(data) != len(first)):
                print(json.dumps({"ok": False, "stage": stage or "payload", "pulls": n}))
                return 1
            first = first or data
            n += 1
        print(json.dumps({"ok": True, "pulls": n, "wire_bytes": len(first or b"")}))
        return 0

    stage, data, peer = pull(ctx, a.host, a.port, a.sni)
    if stage == "marker":
        print(json.dumps({"ok": False, "stage": "marker", "got": data.decode("latin1")}))
        return 1
    if stage == "tls":
        print(json.dumps({"ok": False, "stage": "tls", "error": data}))
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
