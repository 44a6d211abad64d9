#!/usr/bin/env python3
"""Test helper: an IMS-style image list over HTTP. Usage: fake_ims.py PORT TOKEN FILE.
GET answers FILE's JSON when the bearer token matches, 401 otherwise."""
import http.server
import sys

PORT, TOKEN, FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
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


http.server.HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
