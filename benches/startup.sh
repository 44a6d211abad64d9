#!/usr/bin/env bash
# How long a restart takes to serve: s3lun with a catalog of N images (1,000 by
# default) known from its state file and a shared LUN map, while S3 is down (nothing
# listens) and while it is slow (it accepts and never answers). Prints the time to
# the listening line and to the first discovery + REPORT LUNS (libiscsi's iscsi-ls)
# that lists every LUN. Run after `cargo build --release` (or it builds it).
# Knobs: N (images).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=common.sh
. benches/common.sh
N=${N:-1000}
cargo build --release --bin s3lun >/dev/null 2>&1
bin=target/release/s3lun
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

# The state file a worker that served N PE images would have written.
python3 - "$N" "$work/state.json" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
known, assigned = [], {}
for i in range(n):
    url = f"s3://boot-images/PE/image-{i:05}.squashfs"
    etag = f"{i:032x}"
    known.append({"image_id": f"image-{i:05}.squashfs", "origin": "prefix", "url": url,
                  "identity": url, "size": 64 << 20, "etag": etag, "content_key": etag})
    assigned[url] = i
json.dump({"assigned": assigned, "retired": [], "known": known}, open(path, "w"))
PY

# A "slow" S3: accepts connections and never answers.
slow=$(port)
python3 - "$slow" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
pids+=($!)
down=$(port)

run() {
  local what=$1 endpoint=$2 p
  p=$(port)
  mkdir -p "$work/$what"
  cp "$work/state.json" "$work/$what/luns.json"
  cat >"$work/$what/s3lun.toml" <<CFG
listen = ["127.0.0.1:$p"]
state_file = "$work/$what/luns.json"
admin_socket = "$work/$what/admin.sock"
[s3]
endpoint = "$endpoint"
access_key = "test"
secret_key = "test"
[cache]
dir = "$work/$what/cache"
[catalog]
prefixes = ["s3://boot-images/PE/"]
refresh_secs = 60
[lunmap]
s3 = "s3://boot-images/.s3lun/lunmap.json"
CFG
  local t0 t1 t2 luns
  t0=$(now)
  $bin serve --config "$work/$what/s3lun.toml" >"$work/$what/out" 2>"$work/$what/log" &
  pids+=($!)
  until grep -q "listening on" "$work/$what/out" 2>/dev/null; do sleep 0.01; done
  t1=$(now)
  until luns=$(iscsi-ls -s "iscsi://127.0.0.1:$p" 2>/dev/null | grep -c "Lun:") && [ "$luns" -eq "$N" ]; do
    sleep 0.05
  done
  t2=$(now)
  printf "S3 %-5s %d LUNs: listening after %.2f s, iscsi-ls lists all after %.2f s\n" \
    "$what" "$N" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)"
}
run down "http://127.0.0.1:$down"
run slow "http://127.0.0.1:$slow"
