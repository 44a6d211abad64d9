#!/usr/bin/env bash
# Site-sized images against the S3 sites run: a single-node Ceph RGW (scripts/rgw)
# behind `s3lun-storm shape` (LATENCY_MS first-byte latency, MBPS MB/s shared), one
# s3lun worker with a fresh cache per row and `memory_bytes` = 1 GiB, and a boot-like
# scattered trace of each image (`s3lun-storm scatter`: the superblock, the tables at
# the end, FILES files adding up to FILE_MB MB, read as the kernel reads them). The
# images are written sparse locally (bytes where the trace reads) and uploaded whole
# in 8 MiB parts, as the seed's image was. Rows per image:
#   cold / warm            1 node, empty cache, then the same again (the warm time)
#   cold                   NODES nodes at once, empty cache
#   cold, profile          the same with a boot profile published by an earlier boot
#   sequential             one node reading SEQ_MB MB front to back (first image only),
#                          beside one GET of as many bytes through the shaper (the link
#                          as one stream gets it on this machine)
#   cold, timeline         1 node again, s3lun logging every miss (first image only):
#                          where a cold boot's time goes, in target/site/timeline-SIZE.txt
# "limit" is the physical limit of a cold boot: the touched bytes at the link, one
# round trip per dependent miss of the trace, and one node's warm time.
# SIZES (bytes), NODES, FILES, FILE_MB, SEQ_MB, KEEP=1 (keep RGW and its objects in
# target/site for the next run). CI runs it small (SIZES=268435456 NODES="1 4").
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"8589934592 22095331328"}
NODES=${NODES:-"1 20"}
FILES=${FILES:-200}
FILE_MB=${FILE_MB:-110}
SEQ_MB=${SEQ_MB:-2000}
LATENCY_MS=${LATENCY_MS:-15}
MBPS=${MBPS:-100}
PROFILE_SECS=${PROFILE_SECS:-30}
STORM_TIMEOUT=${STORM_TIMEOUT:-600}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin s3lun --bin s3lun-storm
else
  cargo build --quiet --bin s3lun --bin s3lun-storm
fi
bin=target/$PROFILE/s3lun
storm=target/$PROFILE/s3lun-storm
[ -x target/venv/bin/python3 ] || { echo "run scripts/test once first (it makes target/venv)" >&2; exit 1; }
bash scripts/rgw install
# shellcheck source=common.sh
. benches/common.sh
state=target/site
mkdir -p "$state"
work=$(mktemp -d)
pids=()
cleanup() {
  [ -n "${LOGS:-}" ] && mkdir -p "$LOGS" && cp "$work"/*.log "$LOGS"/ 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || { bash scripts/rgw stop "$state/rgw" >/dev/null 2>&1 || true; rm -rf "$state/rgw"; }
  [ "${KEEP:-0}" = 1 ] && bash scripts/rgw stop "$state/rgw" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

endpoint=$(bash scripts/rgw start "$state/rgw" | grep -o 'http://[0-9.:]*' | head -1)
s3ctl() { target/venv/bin/python3 protocol-tests/s3/s3ctl.py "$endpoint" "$@"; }
s3ctl mkbucket boot-images >/dev/null 2>&1 || true
p_s3=$(port)
$storm shape --listen 127.0.0.1:"$p_s3" --upstream "${endpoint#http://}" --latency-ms "$LATENCY_MS" --mbps "$MBPS" --stats "$work/s3.json" &
pids+=($!)
listening "$p_s3"

conf() { # name image-key profiles(true|false)
  cat >"$work/$1.toml" <<CFG
listen = ["127.0.0.1:$S3LUN_PORT"]
metrics_listen = "127.0.0.1:$METRICS_PORT"
target_name = "iqn.2023-06.csm.iscsi:site"
admin_socket = "$work/admin-$1.sock"
[s3]
endpoint = "http://127.0.0.1:$p_s3"
access_key = "test"
secret_key = "test"
[cache]
dir = "$work/cache-$1"
memory_bytes = 1073741824
profiles = $3
profile_secs = $PROFILE_SECS
[[lun]]
s3 = "s3://boot-images/$2"
CFG
}
start() { # name image-key profiles
  S3LUN_PORT=$(port)
  METRICS_PORT=$(port)
  rm -rf "$work/cache-$1"
  conf "$@"
  RUST_LOG=${S3LUN_LOG:-info} $bin serve --config "$work/$1.toml" >/dev/null 2>"$work/s3lun-$1.log" &
  S3LUN_PID=$!
  listening "$S3LUN_PORT"
}
stop() { kill "$S3LUN_PID" 2>/dev/null || true; wait "$S3LUN_PID" 2>/dev/null || true; }
row() { # label nodes image trace size [extra storm args]
  local label=$1 n=$2 image=$3 tr=$4 size=$5
  shift 5
  local before
  before=$(cat "$work/s3.json" 2>/dev/null || echo '{}')
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$work/metrics-before.txt" || true
  timeout "$STORM_TIMEOUT" $storm run --portal 127.0.0.1:"$S3LUN_PORT" --target iqn.2023-06.csm.iscsi:site \
    --lun 0 --image "$image" --trace "$tr" --nodes "$n" --no-discovery --watch-pid "$S3LUN_PID" "$@" \
    >"$work/out.json" 2>"$work/storm.err" || true
  [ -s "$work/out.json" ] || echo '{"errors": -1, "first_errors": ["no summary (timed out?)"]}' >"$work/out.json"
  sleep 0.3
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$work/metrics.txt" || true
  target/venv/bin/python3 - "$label" "$n" "$size" "$before" "$(cat "$work/s3.json" 2>/dev/null || echo '{}')" \
    "$(cat "$work/out.json")" "$($storm info "$tr")" "$work/metrics-before.txt" "$work/metrics.txt" \
    >>"$work/results.jsonl" <<'PY'
import json, sys
label, n, size, before, after, out, info, m0, m1 = sys.argv[1:]
b, a, r = json.loads(before), json.loads(after), json.loads(out)
def scrape(path):
    m = {}
    for line in open(path):
        if line.startswith("s3lun_cache_") and " " in line:
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    return m
m0, m1 = scrape(m0), scrape(m1)
d = lambda k: int(m1.get(k, 0) - m0.get(k, 0))
r.update(cuts=d("s3lun_cache_demand_cuts_total"), fetched=d("s3lun_cache_fetched_bytes_total"))
r.update(label=label, n=int(n), image_bytes=int(size), info=json.loads(info),
         s3_bytes=a.get("bytes", 0) - b.get("bytes", 0), s3_requests=a.get("requests", 0) - b.get("requests", 0))
print(json.dumps(r))
PY
  echo "  $label N=$n: $(tail -1 "$work/results.jsonl" | cut -c1-160)" >&2
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; S3: Ceph RGW $(dpkg-query -W -f='${Version}' radosgw) behind the shaper, ${LATENCY_MS} ms, ${MBPS} MB/s" >&2
first=1
for size in $SIZES; do
  key="site/img-$size.img"
  img="$state/img-$size.img"
  tr="$state/img-$size.trace"
  seq="$state/img-$size.seq.trace"
  if [ ! -s "$tr" ] || [ "$(stat -c %s "$img" 2>/dev/null)" != "$size" ]; then
    $storm scatter --image-bytes "$size" --files "$FILES" --file-mb "$FILE_MB" --seed 3 \
      --trace "$tr" --image "$img" --sequential-mb "$SEQ_MB" --sequential-trace "$seq"
  fi
  if ! s3ctl head boot-images "$key" 2>/dev/null | grep -qx "$size"; then
    t0=$(date +%s)
    s3ctl put boot-images "$key" "$img" --multipart --part-mb 8 >/dev/null
    echo "uploaded $size bytes in $(( $(date +%s) - t0 )) s" >&2
  fi
  rm -f "$state/timeline-$size.txt"
  S3LUN_PORT=0 METRICS_PORT=0 conf none "$key" false
  $bin profile --config "$work/none.toml" drop "s3://boot-images/$key" >/dev/null 2>&1 || true

  start one "$key" false
  row "cold" 1 "$img" "$tr" "$size"
  row "warm" 1 "$img" "$tr" "$size"
  stop
  for n in $NODES; do
    [ "$n" = 1 ] && continue
    start "n$n" "$key" false
    row "cold" "$n" "$img" "$tr" "$size"
    stop
  done
  # An earlier boot publishes the profile (recorded for PROFILE_SECS).
  start rec "$key" true
  row "recording boot" 1 "$img" "$tr" "$size"
  for _ in $(seq $((PROFILE_SECS * 10 + 100))); do
    $bin profile --config "$work/rec.toml" show "s3://boot-images/$key" >/dev/null 2>&1 && break
    sleep 0.1
  done
  stop
  for n in $NODES; do
    start "p$n" "$key" true
    row "cold, profile" "$n" "$img" "$tr" "$size"
    stop
  done
  if [ "$first" = 1 ] && [ "$SEQ_MB" -gt 0 ]; then
    start seq "$key" false
    row "sequential" 1 "$img" "$seq" "$size"
    stop
    S3_ENDPOINT_SHAPED="http://127.0.0.1:$p_s3"
    link=$(target/venv/bin/python3 protocol-tests/s3/s3ctl.py "$S3_ENDPOINT_SHAPED" time-range boot-images "$key" $((SEQ_MB * 1000000)))
    echo "{\"label\": \"one GET\", \"mbps\": $link}" >>"$work/results.jsonl"
  fi
  if [ "$first" = 1 ]; then
    for p in false true; do
      S3LUN_LOG="info,s3lun::timeline=debug" start "tl-$p" "$key" "$p"
      row "cold, timeline$([ $p = true ] && echo ", profile")" 1 "$img" "$tr" "$size"
      stop
      { echo "== cold boot, profiles = $p"; target/venv/bin/python3 benches/timeline.py "$work/s3lun-tl-$p.log"; } \
        >>"$state/timeline-$size.txt"
    done
    first=0
  fi
done

target/venv/bin/python3 - "$work/results.jsonl" "$LATENCY_MS" "$MBPS" <<'PY'
import json, sys
path, lat, mbps = sys.argv[1:]
lat, bw = float(lat) / 1000, float(mbps) * 1e6
rows = [json.loads(l) for l in open(path)]
link = next((r["mbps"] for r in rows if r["label"] == "one GET"), None)
rows = [r for r in rows if r["label"] != "one GET"]
warm = {r["image_bytes"]: r["boot_ms"]["max"] for r in rows if r["label"] == "warm"}
hdr = ["image", "row", "N", "p50 ms", "p99 ms", "limit ms", "p99/limit", "S3/touched", "cached/touched", "GETs",
       "cuts", "RSS MiB", "errors"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
failed = False
for r in rows:
    i, b, t = r["info"], r.get("boot_ms", {}), r.get("target", {})
    touched = i["unique_bytes"]
    if r["label"] == "sequential":
        lim = touched / bw * 1000
    elif r["label"] == "warm":
        lim = None
    else:
        lim = (touched / bw + i["dependent_misses"] * lat) * 1000 + warm.get(r["image_bytes"], 0)
    cells = [f"{r['image_bytes'] / 1e9:.1f} GB", r["label"], r["n"], b.get("p50", "-"), b.get("p99", "-"),
             f"{lim:.0f}" if lim else "-", f"{b.get('p99', 0) / lim:.2f}" if lim else "-",
             f"{r['s3_bytes'] / touched:.2f}", f"{r.get('fetched', 0) / touched:.2f}", r["s3_requests"],
             r.get("cuts", "-"), t.get("peak_rss_mib", "-"),
             f"{r['errors']} ({r.get('wrong_reads', 0)} wrong)" if r["errors"] else "0"]
    print("| " + " | ".join(str(c) for c in cells) + " |")
    failed |= r["errors"] != 0
    for e in r.get("first_errors", [])[:2]:
        print(f"error ({r['label']} N={r['n']}): {e}")
print(f"\nlimit = touched/link + dependent misses x {lat*1000:.0f} ms + one node's warm time; "
      f"sequential: the bytes at {bw/1e6:.0f} MB/s (p99/limit is then the link share's inverse)")
for r in rows:
    if r["label"] == "sequential" and link:
        rate = r["info"]["unique_bytes"] / (r["boot_ms"]["p99"] / 1000) / 1e6
        print(f"sequential read: {rate:.1f} MB/s; one GET of the same bytes through the shaper: "
              f"{link:.1f} MB/s; ratio {rate / link:.2f}")
sys.exit(1 if failed else 0)
PY
