#!/usr/bin/env python3
"""An HTTP proxy in front of a real S3 server (moto) that breaks ranged GETs on demand.

Usage: faulty_proxy.py LISTEN_PORT UPSTREAM_PORT

Every request is forwarded to 127.0.0.1:UPSTREAM_PORT. A ranged GET (a request with a
Range header) is broken while a fault is armed:

  GET /__fault__/MODE/COUNT   arm MODE for the next COUNT ranged GETs (COUNT 0 disarms)
  GET /__fault__/served       how many ranged GETs were broken so far

Modes:
  500, 503   an S3 error response (InternalError / SlowDown) with that status
  stall      say nothing for 60 s, then close
  truncate   the real headers and Content-Length, half the body, then close
  short      a consistent response whose Content-Length and body are half the range
  long       Content-Length and body 512 bytes longer than the range
  etag       the real body with a different ETag (a cache in the way ignoring If-Match)

One mode applies to PUTs instead of ranged GETs:
  strip-conditions   forward the next COUNT PUTs without If-Match / If-None-Match (a
                     server that ignores conditional writes)
"""

import http.client
import socket
import socketserver
import sys
import threading
import time

UPSTREAM = ("127.0.0.1", int(sys.argv[2]))
STATE = {"mode": None, "left": 0, "served": 0}
LOCK = threading.Lock()


PUT_MODES = ("strip-conditions",)


def take_fault(put):
    """The armed mode, if it applies to this request (a PUT or a ranged GET)."""
    with LOCK:
        if STATE["left"] <= 0 or (STATE["mode"] in PUT_MODES) != put:
            return None
        STATE["left"] -= 1
        STATE["served"] += 1
        return STATE["mode"]


def read_request(f):
    line = f.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = []
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        headers.append((k.strip(), v.strip()))
    length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
    body = f.read(length) if length else b""
    return method, target, headers, body


def respond(sock, status, reason, headers, body, declared=None):
    head = f"HTTP/1.1 {status} {reason}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    n = len(body) if declared is None else declared
    head += f"Content-Length: {n}\r\n\r\n"
    sock.sendall(head.encode("latin-1") + body)


def s3_error(sock, status, code):
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>injected by faulty_proxy</Message></Error>"
    ).encode()
    respond(sock, status, code, [("Content-Type", "application/xml")], body)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        f = sock.makefile("rb")
        while True:
            try:
                req = read_request(f)
            except (OSError, ValueError):
                return
            if req is None:
                return
            method, target, headers, body = req
            if target.startswith("/__fault__/"):
                parts = target.split("/")
                if parts[2] == "served":
                    with LOCK:
                        out = str(STATE["served"]).encode()
                else:
                    with LOCK:
                        STATE["mode"], STATE["left"] = parts[2], int(parts[3])
                    out = b"ok"
                respond(sock, 200, "OK", [], out)
                return
            ranged = method == "GET" and any(k.lower() == "range" for k, _ in headers)
            mode = None
            if ranged:
                mode = take_fault(put=False)
            elif method == "PUT":
                mode = take_fault(put=True)
            if mode == "strip-conditions":
                headers = [(k, v) for k, v in headers if k.lower() not in ("if-match", "if-none-match")]
            if mode == "500":
                s3_error(sock, 500, "InternalError")
                continue
            if mode == "503":
                s3_error(sock, 503, "SlowDown")
                continue
            if mode == "stall":
                time.sleep(60)
                return
            up = http.client.HTTPConnection(*UPSTREAM, timeout=30)
            fwd = {k: v for k, v in headers if k.lower() != "connection"}
            up.request(method, target, body=body, headers=fwd)
            r = up.getresponse()
            data = r.read()
            out_headers = [
                (k, v)
                for k, v in r.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            ]
            up.close()
            if method == "HEAD":
                length = next((v for k, v in r.getheaders() if k.lower() == "content-length"), "0")
                respond(sock, r.status, r.reason, out_headers, b"", declared=int(length))
                # respond() wrote no body: HEAD has none.
                continue
            if mode == "truncate":
                respond(sock, r.status, r.reason, out_headers, data[: len(data) // 2], declared=len(data))
                sock.shutdown(socket.SHUT_RDWR)
                return
            if mode == "short":
                data = data[: len(data) // 2]
            elif mode == "long":
                data = data + b"\xa5" * 512
            elif mode == "etag":
                out_headers = [
                    (k, '"0123456789abcdef0123456789abcdef"' if k.lower() == "etag" else v)
                    for k, v in out_headers
                ]
            respond(sock, r.status, r.reason, out_headers, data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as s:
        s.serve_forever()
