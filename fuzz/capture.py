#!/usr/bin/env python3
"""Record what real initiators send, as seed corpora for the fuzz targets.

Usage: capture.py LISTEN_PORT TARGET_PORT OUT_DIR

A TCP proxy: every connection to LISTEN_PORT is relayed to 127.0.0.1:TARGET_PORT and
the initiator's side of it saved as OUT_DIR/<LISTEN_PORT>-conn-N.bin. `fuzz/capture.sh` drives
libiscsi's tools and qemu-img through it and splits the streams into seeds; the kernel
boot tests put it between the guest and s3lun when S3LUN_CAPTURE_DIR is set.
"""

import socket
import sys
import threading

listen_port, target_port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counter = [0]
lock = threading.Lock()


def pump(src, dst, record):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if record is not None:
                record.write(b)
            dst.sendall(b)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        with lock:
            counter[0] += 1
            n = counter[0]
        t = socket.create_connection(("127.0.0.1", target_port))
        rec = open(f"{out_dir}/{listen_port}-conn-{n}.bin", "wb")
        threading.Thread(target=pump, args=(c, t, rec), daemon=True).start()
        threading.Thread(target=pump, args=(t, c, None), daemon=True).start()


serve()
