#!/usr/bin/env python3
"""Test helper: an IMS-style image list over HTTP or HTTPS.

Usage: fake_ims.py PORT TOKEN FILE [CERT KEY]
GET answers FILE's JSON when the bearer token matches TOKEN, 401 otherwise. TOKEN
"@PATH" accepts any line of PATH, read at each request (tokens rotate). Every token
presented is appended to FILE.seen. With CERT and KEY (PEM), it speaks HTTPS."""
import http.server
import ssl
import sys

PORT, TOKEN, FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def valid_tokens():
    if TOKEN.startswith("@"):
        with open(TOKEN[1:]) as f:
            return {line.strip() for line in f if line.strip()}
    return {TOKEN}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization") or ""
        presented = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with open(FILE + ".seen", "a") as f:
            f.write(presented + "\n")
        if presented not in valid_tokens():
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(FILE, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
