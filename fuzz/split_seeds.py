#!/usr/bin/env python3
"""Split captured initiator streams (see capture.py) into seeds for every target.

Usage: split_seeds.py CAPTURE_DIR CORPUS_DIR

session/  each whole stream (logins switch to the digests they negotiated, so the
          stream is only split where no digests are in use)
pdu/      each PDU, prefixed with the mode byte 0 (no digests)
login_text/  each Login or Text request's data segment
cdb/      each SCSI command's CDB
"""

import hashlib
import os
import sys

cap, corpus = sys.argv[1], sys.argv[2]
# Commands differ mostly in tags and sequence numbers: a few of each kind is enough.
PER_KIND = 6
seen = {}


def save(kind, blob, bucket=None):
    if bucket is not None:
        n = seen.get((kind, bucket), 0)
        if n >= PER_KIND:
            return
        seen[(kind, bucket)] = n + 1
    d = os.path.join(corpus, kind)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


for fn in sorted(os.listdir(cap)):
    stream = open(os.path.join(cap, fn), "rb").read()
    if not stream:
        continue
    save("session", stream[: 64 << 10])
    pos = 0
    while pos + 48 <= len(stream):
        bhs = stream[pos : pos + 48]
        op = bhs[0] & 0x3F
        ahs = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        total = 48 + ahs + (dlen + 3) // 4 * 4
        pdu = stream[pos : pos + total]
        data = pdu[48 + ahs : 48 + ahs + dlen]
        if op in (0x03, 0x04) and data:
            save("login_text", data)
        if op == 0x01:
            save("cdb", bhs[32:48], bhs[32])
        if op != 0x05:  # Data-Out payloads add nothing but size
            save("pdu", b"\x00" + pdu, (op, bhs[32] if op == 0x01 else 0))
        pos += total
