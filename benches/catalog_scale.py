#!/usr/bin/env python3
"""The catalog at site scale: M image manifests (10,000 by default) with their rootfs
objects and P PE objects (1,000) in moto, served by one s3lun (release build).

Prints, for the first scan, an unchanged rescan and a rescan after C images (10)
were rebuilt: the scan time (s3lun_catalog_scan_duration_seconds) and the S3
requests it made (LIST pages, HEADs, GETs, from s3lun's own counters); then the LUNs
served, s3lun's RSS, and what REPORT LUNS returns through libiscsi's iscsi-ls.

Run by benches/catalog_scale.sh (which builds s3lun and finds moto); knobs in the
environment: M, P, C, OBJECT_BYTES.
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

M = int(os.environ.get("M", 10000))
P = int(os.environ.get("P", 1000))
C = int(os.environ.get("C", 10))
OBJECT_BYTES = int(os.environ.get("OBJECT_BYTES", 4096))
BIN = sys.argv[1]
MOTO = sys.argv[2]
TARGET = "iqn.2023-06.csm.iscsi:catalog-scale"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, what, secs=30):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not start")


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z0-9_]+) ([0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def counts(port):
    m = metrics(port)
    return {
        "scans": m.get("s3lun_catalog_scans_total", 0),
        "secs": m.get("s3lun_catalog_scan_duration_seconds_sum", 0.0),
        "lists": m.get("s3lun_s3_lists_total", 0),
        "heads": m.get("s3lun_s3_heads_total", 0),
        "gets": m.get("s3lun_s3_gets_total", 0),
        "luns": m.get("s3lun_luns", 0),
    }


def main():
    work = tempfile.mkdtemp(prefix="s3lun-catalog-scale-")
    procs = []
    try:
        mport = free_port()
        procs.append(subprocess.Popen([MOTO, "-p", str(mport)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(mport, "moto")
        endpoint = f"http://127.0.0.1:{mport}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
        s3.create_bucket(Bucket="boot-images")
        body = b"\0" * OBJECT_BYTES

        def image(i, gen=0):
            data = body[:-8] + f"{i:04x}{gen:04x}".encode()
            etag = s3.put_object(Bucket="boot-images", Key=f"img{i:05}/rootfs", Body=data)["ETag"].strip('"')
            manifest = {"artifacts": [{"link": {"path": f"s3://boot-images/img{i:05}/rootfs", "etag": etag, "type": "s3"},
                                       "type": "application/vnd.cray.image.rootfs.squashfs"}],
                        "created": "20261201000000", "version": "1.0"}
            s3.put_object(Bucket="boot-images", Key=f"img{i:05}/manifest.json", Body=json.dumps(manifest).encode())

        def pe(i):
            s3.put_object(Bucket="boot-images", Key=f"PE/pe{i:04}.squashfs", Body=body[:-4] + f"{i:04x}".encode())

        t = time.time()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(image, range(M)))
            list(ex.map(pe, range(P)))
        print(f"moto: {2 * M + P} objects uploaded in {time.time() - t:.0f} s")

        sport, xport = free_port(), free_port()
        cfg = os.path.join(work, "s3lun.toml")
        with open(cfg, "w") as f:
            f.write(f'target_name = "{TARGET}"\nlisten = ["127.0.0.1:{sport}"]\nmetrics_listen = "127.0.0.1:{xport}"\n'
                    f'admin_socket = "{work}/admin.sock"\nstate_file = "{work}/state.json"\n'
                    f'[s3]\nendpoint = "{endpoint}"\naccess_key = "test"\nsecret_key = "test"\n'
                    f'[cache]\ndir = "{work}/cache"\n'
                    f'[catalog]\nmanifest_buckets = ["boot-images"]\nprefixes = ["s3://boot-images/PE/"]\nrefresh_secs = 0\n')
        log = open(os.path.join(work, "s3lun.log"), "w")
        srv = subprocess.Popen([BIN, "serve", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log,
                               env=dict(os.environ, RUST_LOG="error"))
        procs.append(srv)
        wait_port(xport, "s3lun")

        def scan_after(trigger):
            before = counts(xport)
            if trigger:
                os.kill(srv.pid, signal.SIGHUP)
            deadline = time.time() + 1200
            while counts(xport)["scans"] <= before["scans"]:
                if time.time() > deadline:
                    sys.exit("scan did not finish")
                time.sleep(0.2)
            after = counts(xport)
            return {k: after[k] - before[k] for k in ("secs", "lists", "heads", "gets")} | {"luns": after["luns"]}

        rows = []
        # The first scan starts by itself at start-up.
        first = {"scans": 0, "secs": 0, "lists": 0, "heads": 0, "gets": 0}
        deadline = time.time() + 1200
        while counts(xport)["scans"] < 1:
            if time.time() > deadline:
                sys.exit("the first scan did not finish")
            time.sleep(0.2)
        c = counts(xport)
        # The scan is counted before the LUN table it yields is built.
        while counts(xport)["luns"] == 0 and time.time() < deadline:
            time.sleep(0.2)
        rows.append(("first scan", {k: c[k] - first[k] for k in ("secs", "lists", "heads", "gets")} | {"luns": counts(xport)["luns"]}))
        rows.append(("unchanged rescan", scan_after(True)))
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda i: image(i, 1), range(0, M, max(1, M // C))[:C]))
        rows.append((f"rescan, {C} images rebuilt", scan_after(True)))

        rss = 0
        with open(f"/proc/{srv.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
        t = time.time()
        ls = subprocess.run(["iscsi-ls", "-s", f"iscsi://127.0.0.1:{sport}"], capture_output=True, text=True, timeout=600)
        ls_secs = time.time() - t
        reported = sum(1 for l in ls.stdout.splitlines() if l.strip().startswith("Lun:"))

        print(f"catalog: {M} manifests + {P} PE objects in moto ({OBJECT_BYTES}-byte objects)")
        print(f"{'scan':<28}{'time s':>9}{'LIST':>7}{'HEAD':>7}{'GET':>7}{'LUNs':>7}")
        for name, r in rows:
            print(f"{name:<28}{r['secs']:>9.2f}{r['lists']:>7.0f}{r['heads']:>7.0f}{r['gets']:>7.0f}{r['luns']:>7.0f}")
        print(f"s3lun RSS with {rows[-1][1]['luns']:.0f} LUNs: {rss} MiB")
        print(f"iscsi-ls -s: {reported} LUNs reported in {ls_secs:.1f} s (exit {ls.returncode})")
        if ls.returncode != 0 or ls.stderr.strip():
            print("iscsi-ls said: " + ls.stderr.strip()[-500:])
            print("iscsi-ls last lines: " + " | ".join(ls.stdout.splitlines()[-3:]))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
