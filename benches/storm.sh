#!/usr/bin/env bash
# Boot storm at fleet scale, side by side with the architecture s3lun replaces. One
# run, one machine, the same image, generator and shaped S3 for every row:
#   s3lun cold   s3lun from S3 with an empty cache (a new image landing)
#   s3lun warm   the same target again, cache full
#   tgt+s3fs     Debian tgt serving the image as a file on an s3fs mount of the same
#                S3 (cold: a fresh mount per row)
#   tgt local    tgt serving a local copy (no S3 at all: the reference)
# for N nodes each (NODES, default "100 1000"), every node a session of its own
# (discovery, login, the boot trace replayed with its timing, every byte checked),
# and BIG (10000) sessions of s3lun that log in, boot the short trace and stay
# logged in answering NOPs while fresh logins are timed.
# S3 is moto behind `s3lun-storm shape` (LATENCY_MS first-byte latency per request,
# MBPS MB/s shared by all answers), so cold reads pay what they pay in production.
# "limit" is the physical limit of a cold storm: fetching the bytes the trace touches
# once at that latency and bandwidth, plus one node's warm trace time.
# Installs what it needs beyond scripts/test's (tgt, s3fs, strace) with apt-get; moto
# comes from target/venv (scripts/test installs it). Run as root. Prints one table.
# PROFILE=debug uses the debug build (CI's functional run at a tiny N).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for t in tgtd:tgt s3fs:s3fs strace:strace curl:curl mksquashfs:squashfs-tools; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get install -y -qq --no-remove --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-remove --no-install-recommends "${need[@]}" >/dev/null; }
fi
NODES=${NODES-"100 1000"}
BIG=${BIG:-10000}
TRACE=${TRACE:-debian}
BIG_TRACE=${BIG_TRACE:-small}
LATENCY_MS=${LATENCY_MS:-15}
MBPS=${MBPS:-100}
STORM_TIMEOUT=${STORM_TIMEOUT:-300}

PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin s3lun --bin s3lun-storm
else
  cargo build --quiet --bin s3lun --bin s3lun-storm
fi
bash benches/storm/images.sh >/dev/null
bin=target/$PROFILE/s3lun
storm=target/$PROFILE/s3lun-storm
# 10,000 sessions are 10,000 descriptors on each side.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
# As many connections as the descriptor limit leaves room for (s3lun refuses to start
# with a max_connections the limit cannot cover).
# Room for what s3lun adds to max_connections (listeners, 256 metrics connections,
# the S3 pool, a reserve: see its "file descriptor limit" log line).
maxc=$(( $(ulimit -n) - 700 ))
[ "$maxc" -gt 30000 ] && maxc=30000
work=$(mktemp -d)
# shellcheck source=common.sh
. benches/common.sh
ctl=$((20000 + RANDOM % 10000))
pids=()
cleanup() {
  # LOGS=dir keeps the targets' logs of the run there.
  [ -n "${LOGS:-}" ] && mkdir -p "$LOGS" && cp "$work"/*.log "$LOGS"/ 2>/dev/null
  tgt_stop $ctl
  s3fs_unmount "$work/s3fs"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

img=target/storm/$TRACE.squashfs
big_img=target/storm/$BIG_TRACE.squashfs
trace=benches/storm/traces/$TRACE.trace
big_trace=benches/storm/traces/$BIG_TRACE.trace

moto_start
pids+=("$MOTO_PID")
p_moto=$MOTO_PORT
for i in "$img" "$big_img"; do
  s3_put "$i" "PE/$(basename "$i")"
done
p_s3=$(port)
$storm shape --listen 127.0.0.1:"$p_s3" --upstream 127.0.0.1:"$p_moto" --latency-ms "$LATENCY_MS" --mbps "$MBPS" --stats "$work/s3.json" &
pids+=($!)
listening "$p_s3"

# One storm: label nodes portal target lun image trace pids... [-- extra args]
storm() {
  local label=$1 n=$2 portal=$3 iqn=$4 lun=$5 image=$6 tr=$7
  shift 7
  local watch=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do watch+=(--watch-pid "$1"); shift; done
  [ "${1:-}" = "--" ] && shift && extra=("$@")
  local before
  before=$(cat "$work/s3.json" 2>/dev/null || echo '{}')
  timeout "$STORM_TIMEOUT" $storm run --portal "$portal" --target "$iqn" --lun "$lun" --image "$image" \
    --trace "$tr" --nodes "$n" "${watch[@]}" "${extra[@]}" >"$work/out.json" 2>"$work/storm.err" || true
  [ -s "$work/out.json" ] || echo '{"errors": -1, "first_errors": ["no summary (timed out?)"]}' >"$work/out.json"
  sleep 0.2
  python3 - "$label" "$n" "$(stat -c %s "$image")" "$before" "$(cat "$work/s3.json" 2>/dev/null || echo '{}')" \
    "$(cat "$work/out.json")" >>"$work/results.jsonl" <<'PY'
import json, sys
label, n, image, before, after, out = sys.argv[1:]
b, a, r = json.loads(before), json.loads(after), json.loads(out)
r.update(label=label, n=int(n), image_bytes=int(image),
         s3_bytes=a.get("bytes", 0) - b.get("bytes", 0),
         s3_requests=a.get("requests", 0) - b.get("requests", 0))
print(json.dumps(r))
PY
  echo "  $label N=$n: $(tail -1 "$work/results.jsonl" | cut -c1-200)" >&2
}

s3lun_conf() { # cache-dir port lun-object
  cat <<CFG
listen = ["127.0.0.1:$2"]
target_name = "iqn.2023-06.csm.iscsi:storm"
max_connections = $maxc
max_connections_per_address = $maxc
max_sessions = $maxc
max_sessions_per_initiator = 4
admin_socket = "$work/admin.sock"
[s3]
endpoint = "http://127.0.0.1:$p_s3"
access_key = "test"
secret_key = "test"
[cache]
dir = "$1"
# Small images fetched whole (off by default): the lab case, and moto reads the whole
# object for every ranged GET, so one GET per miss would cost it the image each time.
prefetch_whole_max_bytes = 1073741824
[[lun]]
s3 = "s3://boot-images/PE/$3"
CFG
}
s3lun_start() { # label image-file -> S3LUN_PID, S3LUN_PORT
  S3LUN_PORT=$(port)
  rm -rf "$work/cache-$1"
  s3lun_conf "$work/cache-$1" "$S3LUN_PORT" "$(basename "$2")" >"$work/$1.toml"
  $bin serve --config "$work/$1.toml" >/dev/null 2>"$work/s3lun-$1.log" &
  S3LUN_PID=$!
  listening "$S3LUN_PORT"
}
s3lun_stop() { kill "$S3LUN_PID" 2>/dev/null || true; wait "$S3LUN_PID" 2>/dev/null || true; }
iqn=iqn.2023-06.csm.iscsi:storm
tgt_iqn=iqn.2001-04.com.example:storm

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)" >&2
echo "S3: moto behind the shaper, ${LATENCY_MS} ms first byte, ${MBPS} MB/s shared" >&2

# One node's warm trace time, for the limit.
s3lun_start warm1 "$img"
storm "s3lun cold" 1 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$img" "$trace" "$S3LUN_PID" -- --no-discovery
storm "warm one node" 1 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$img" "$trace" "$S3LUN_PID" -- --no-discovery
s3lun_stop

cp "$img" "$work/local.img"
cat "$work/local.img" >/dev/null
for n in $NODES; do
  s3lun_start "n$n" "$img"
  storm "s3lun cold" "$n" 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$img" "$trace" "$S3LUN_PID"
  storm "s3lun warm" "$n" 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$img" "$trace" "$S3LUN_PID"
  s3lun_stop

  p_tgt=$(port)
  s3fs_mount "$work/s3fs" "http://127.0.0.1:$p_s3"
  tgt_start "$p_tgt" $ctl "$work/s3fs/PE/$(basename "$img")" $tgt_iqn
  listening "$p_tgt"
  storm "tgt+s3fs cold" "$n" 127.0.0.1:"$p_tgt" $tgt_iqn 1 "$img" "$trace" "$TGT_PID" "$S3FS_PID"
  tgt_stop $ctl
  s3fs_unmount "$work/s3fs"

  tgt_start "$p_tgt" $ctl "$work/local.img" $tgt_iqn
  listening "$p_tgt"
  storm "tgt local" "$n" 127.0.0.1:"$p_tgt" $tgt_iqn 1 "$img" "$trace" "$TGT_PID"
  tgt_stop $ctl
done

if [ "$BIG" -gt 0 ]; then
  s3lun_start warm1small "$big_img"
  storm "s3lun cold" 1 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$big_img" "$big_trace" "$S3LUN_PID" -- --no-discovery
  storm "warm one node, short trace" 1 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$big_img" "$big_trace" "$S3LUN_PID" -- --no-discovery
  s3lun_stop
  s3lun_start big "$big_img"
  storm "s3lun cold, held" "$BIG" 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$big_img" "$big_trace" "$S3LUN_PID" -- --hold --probes 20 --ramp-ms 5000
  storm "s3lun warm, held" "$BIG" 127.0.0.1:"$S3LUN_PORT" $iqn 0 "$big_img" "$big_trace" "$S3LUN_PID" -- --hold --probes 20 --ramp-ms 5000
  s3lun_stop
fi

python3 - "$work/results.jsonl" "$LATENCY_MS" "$MBPS" "$($storm info "$trace")" "$($storm info "$big_trace")" "$TRACE" "$BIG_TRACE" <<'PY'
import json, sys
path, lat, mbps, info, big_info, name, big_name = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
lat, bw = float(lat) / 1000, float(mbps) * 1e6
info, big_info = json.loads(info), json.loads(big_info)
warm1 = next((r["boot_ms"]["max"] for r in rows if r["label"] == "warm one node"), 0)
warm1_short = next((r["boot_ms"]["max"] for r in rows if r["label"] == "warm one node, short trace"), 0)
def limit(i, warm):
    return (lat + i["unique_bytes"] / bw) * 1000 + warm
print(f"trace {name}: {info['reads']} reads, {info['bytes_read']/1e6:.1f} MB read, {info['unique_bytes']/1e6:.1f} MB touched; "
      f"trace {big_name}: {big_info['reads']} reads, {big_info['unique_bytes']/1e6:.1f} MB touched; "
      f"one node warm: {warm1:.0f} ms ({name}), {warm1_short:.0f} ms ({big_name})")
# Each cold row against the same target (or for tgt+s3fs, the same tgt) warm at the
# same N: what S3 cost it, on a machine whose cores the generator shares.
warm_of = {"s3lun cold": "s3lun warm", "tgt+s3fs cold": "tgt local", "s3lun cold, held": "s3lun warm, held"}
p99 = {(r["label"], r["n"]): r.get("boot_ms", {}).get("p99", 0) for r in rows}
hdr = ["N", "target", "p50 ms", "p99 ms", "max ms", "limit ms", "p99/limit", "p99/warm", "S3/image", "S3 reqs",
       "CPU ms/node", "RSS MiB", "fds", "logins/s", "new login ms", "errors"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for r in rows:
    if r["label"].startswith("warm one node") or (r["label"] == "s3lun cold" and r["n"] == 1):
        continue
    held = "held" in r["label"]
    lim = limit(big_info if held else info, warm1_short if held else warm1) if "cold" in r["label"] else None
    b, t = r.get("boot_ms", {}), r.get("target", {})
    cells = [r["n"], r["label"], b.get("p50", "-"), b.get("p99", "-"), b.get("max", "-"),
             f"{lim:.0f}" if lim else "-", f"{b.get('p99', 0) / lim:.2f}" if lim else "-",
             f"{b.get('p99', 0) / w:.2f}" if (w := p99.get((warm_of.get(r["label"]), r["n"]))) else "-",
             f"{r['s3_bytes'] / r['image_bytes']:.3f}" if "local" not in r["label"] else "-",
             r["s3_requests"] if "local" not in r["label"] else "-",
             f"{1000 * t.get('cpu_s', 0) / max(r['n'], 1):.1f}", t.get("peak_rss_mib", "-"), t.get("peak_fds", "-"),
             r.get("logins_per_sec", "-"),
             r["probe_login_ms"]["max"] if r.get("sessions_held") else "-",
             f"{r['errors']} ({r.get('wrong_reads', 0)} wrong)" if r["errors"] else "0"]
    print("| " + " | ".join(str(c) for c in cells) + " |")
failed = False
for r in rows:
    failed |= r["errors"] != 0
    for e in r.get("first_errors", [])[:2]:
        print(f"error ({r['label']} N={r['n']}): {e}")
sys.exit(1 if failed else 0)
PY
