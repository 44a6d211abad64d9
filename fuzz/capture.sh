#!/usr/bin/env bash
# Record what libiscsi's tools, qemu-img and the Linux kernel initiator (iscsistart
# and dracut/open-iscsi, booted under QEMU by the kernel_boot tests) send to s3lun and
# turn it into seed corpora under fuzz/corpus/ (checked in). Run from the repository root after
# `cargo build --release`; needs libiscsi-bin and qemu-block-extra (scripts/test
# installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/s3lun
TARGET=iqn.2023-06.csm.iscsi:s3lun-test
cap=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$cap"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
TP=$(port); PP=$(port)
"$BIN" serve --listen 127.0.0.1:$TP --target-name $TARGET --demo >/dev/null 2>&1 &
python3 fuzz/capture.py "$PP" "$TP" "$cap" &
sleep 1
URL=iscsi://127.0.0.1:$PP/$TARGET/0
iscsi-ls -s iscsi://127.0.0.1:$PP >/dev/null
iscsi-inq "$URL" >/dev/null
iscsi-inq -e 1 -c 0x83 "$URL" >/dev/null
iscsi-inq -e 1 -c 0xb0 "$URL" >/dev/null
iscsi-readcapacity16 "$URL" >/dev/null
iscsi-perf -t 1 -m 4 -b 8 "$URL" >/dev/null 2>&1 || true
iscsi-test-cu -t ALL.Inquiry,ALL.ReadCapacity10,ALL.ReportSupportedOpcodes,ALL.ModeSense6,ALL.Read10,ALL.TestUnitReady "$URL" >/dev/null 2>&1 || true
qemu-img convert -f raw -O raw "$URL" "$cap/../demo.raw" && rm -f "$cap/../demo.raw"
sleep 1
S3LUN_CAPTURE_DIR="$cap" cargo test --release --test kernel_boot >/dev/null
python3 fuzz/split_seeds.py "$cap" fuzz/corpus
mkdir -p fuzz/corpus/manifest
cp protocol-tests/fixtures/manifests/* fuzz/corpus/manifest/
for d in fuzz/corpus/*; do echo "$d: $(ls "$d" | wc -l) seeds"; done
