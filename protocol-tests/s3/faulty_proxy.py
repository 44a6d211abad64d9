#!/usr/bin/env python3
"""An HTTP proxy in front of a real S3 server (moto) that breaks ranged GETs on demand.

Usage: faulty_proxy.py LISTEN_PORT UPSTREAM_PORT

Every request is forwarded to 127.0.0.1:UPSTREAM_PORT. A ranged GET (a request with a
Range header) is broken while a fault is armed:

  GET /__fault__/MODE/COUNT   arm MODE for the next COUNT ranged GETs (COUNT 0 disarms)
  GET /__fault__/MODE/COUNT/MIN   the same, for ranged GETs of at least MIN bytes
                              only (a read-ahead window, not a single chunk)
  GET /__fault__/served       how many ranged GETs were broken so far

Modes:
  500, 503   an S3 error response (InternalError / SlowDown) with that status
  stall      say nothing for 60 s, then close
  truncate   the real headers and Content-Length, half the body, then close
  short      a consistent response whose Content-Length and body are half the range
  long       Content-Length and body 512 bytes longer than the range
  etag       the real body with a different ETag (a cache in the way ignoring If-Match)
  no-etag    the real answer without its ETag header
  ignore-range  the request forwarded without its Range: 200 and the whole object
  shift      the range asked for 4113 bytes further on (the real answer to that range,
             its Content-Range included)
  flip       the real answer with one byte of its body flipped (headers untouched:
             only a digest can tell)
  huge       a 200-free lie: the real headers, a declared Content-Length of 1 GiB and
             a body of filler as long as the client reads
  huge-chunked  the same without a length: a chunked body of filler without end
  random     one of the modes above but stall and flip (or, half the time, none)
             picked at random for each ranged GET

Two modes apply to PUTs instead of ranged GETs:
  strip-conditions   forward the next COUNT PUTs without If-Match / If-None-Match (a
                     server that ignores conditional writes)
  refuse-if-match    answer the next COUNT PUTs that carry If-Match with 412, right
                     ETag or not (a server that can create but never update)
"""

import http.client
import random
import re
import socket
import socketserver
import sys
import threading
import time

UPSTREAM = ("127.0.0.1", int(sys.argv[2]))
STATE = {"mode": None, "left": 0, "served": 0, "min": 0}
LOCK = threading.Lock()


PUT_MODES = ("strip-conditions", "refuse-if-match")
FAULTS = ("500", "truncate", "short", "long", "etag", "no-etag", "ignore-range", "shift",
          "huge", "huge-chunked")
# Half of the answers broken: enough that most reads meet a fault, few that meet one on
# every attempt.
RANDOM_MODES = FAULTS + (None,) * len(FAULTS)
SHIFT = 4113


def take_fault(put, length=0):
    """The armed mode, if it applies to this request (a PUT or a ranged GET of
    `length` bytes)."""
    with LOCK:
        if STATE["left"] <= 0 or (STATE["mode"] in PUT_MODES) != put:
            return None
        if not put and length < STATE["min"]:
            return None
        mode = STATE["mode"]
        if mode == "random":
            mode = random.choice(RANDOM_MODES)
            if mode is None:
                return None
        STATE["left"] -= 1
        STATE["served"] += 1
        return mode


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
        try:
            self.serve()
        except OSError:
            # The client hung up mid-answer (it refused the answer, or was stopped).
            pass

    def serve(self):
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
                        STATE["min"] = int(parts[4]) if len(parts) > 4 else 0
                    out = b"ok"
                respond(sock, 200, "OK", [], out)
                return
            ranged = method == "GET" and any(k.lower() == "range" for k, _ in headers)
            mode = None
            if ranged:
                rng = next(v for k, v in headers if k.lower() == "range")
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng.strip())
                length = int(m.group(2)) - int(m.group(1)) + 1 if m else 0
                mode = take_fault(put=False, length=length)
            elif method == "PUT" and (
                STATE["mode"] != "refuse-if-match" or any(k.lower() == "if-match" for k, _ in headers)
            ):
                mode = take_fault(put=True)
            if mode == "refuse-if-match":
                s3_error(sock, 412, "PreconditionFailed")
                continue
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
            if mode == "ignore-range":
                fwd = {k: v for k, v in fwd.items() if k.lower() != "range"}
            elif mode == "shift":
                fwd = {k: (shift_range(v) if k.lower() == "range" else v) for k, v in fwd.items()}
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
            if mode == "stall-body":
                # Headers and half the body, then nothing: a read stuck mid-body.
                respond(sock, r.status, r.reason, out_headers, data[: len(data) // 2], declared=len(data))
                time.sleep(60)
                return
            if mode == "truncate":
                respond(sock, r.status, r.reason, out_headers, data[: len(data) // 2], declared=len(data))
                sock.shutdown(socket.SHUT_RDWR)
                return
            if mode in ("huge", "huge-chunked"):
                filler(sock, r, out_headers, chunked=mode == "huge-chunked")
                return
            if mode == "flip" and data:
                i = random.randrange(len(data))
                data = data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]
            elif mode == "no-etag":
                out_headers = [(k, v) for k, v in out_headers if k.lower() != "etag"]
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


def shift_range(v):
    """`bytes=A-B` moved SHIFT bytes on (the upstream clamps past the end)."""
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", v.strip())
    if not m:
        return v
    return f"bytes={int(m.group(1)) + SHIFT}-{int(m.group(2)) + SHIFT}"


def filler(sock, r, out_headers, chunked):
    """The real status and headers, then filler until the client hangs up (at most
    1 GiB): a declared 1 GiB Content-Length, or a chunked body without end."""
    head = f"HTTP/1.1 {r.status} {r.reason}\r\n"
    for k, v in out_headers:
        head += f"{k}: {v}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {1 << 30}\r\n\r\n"
    piece = b"\x5a" * (1 << 16)
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    try:
        sock.sendall(head.encode("latin-1"))
        for _ in range((1 << 30) // (1 << 16)):
            sock.sendall(piece)
    except OSError:
        pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as s:
        s.serve_forever()
