#!/usr/bin/env python3
"""A receiver stand-in for one race: it answers register_new and the first
register_new_ongoing poll of each connection, and closes a kept-alive connection as soon as
a second request arrives on it, without answering. That is what a receiver whose keep-alive
timer fires just as the client's next poll goes out looks like to the client (Checkmk's
receiver under gunicorn/uvicorn closes idle connections after 2 s, the poll period)."""
import argparse
import http.server
import json
import os
import ssl


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True, help="a tether-receiver site directory (ca/)")
    p.add_argument("--site", required=True)
    p.add_argument("--ready-file", required=True)
    a = p.parse_args()
    root_cert = open(os.path.join(a.dir, "ca", "site-ca.pem")).read()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.served = 0

        def log_message(self, *args):
            pass

        def reply(self, doc):
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.served += 1

        def do_POST(self):
            if self.served > 0:
                self.close_connection = True
                return
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            base = f"/{a.site}/agent-receiver/"
            if self.path == base + "register_new":
                self.reply({"root_cert": root_cert})
            elif self.path.startswith(base + "register_new_ongoing/"):
                self.reply({"status": "InProgress"})
            else:
                self.send_error(404)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(a.dir, "ca", "server.pem"), os.path.join(a.dir, "ca", "server.key"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    tmp = a.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"127.0.0.1:{server.server_address[1]}")
    os.rename(tmp, a.ready_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
