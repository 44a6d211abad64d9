#!/usr/bin/env bash
# What a Prometheus scrape costs the data path: s3lun serving LUNS LUNs (16,384 by
# default, one image file under that many identities) and one session's 4 KiB
# random reads timed one at a time (s3lun-storm latency), first alone, then while
# SCRAPERS clients fetch /metrics every second. Prints both p50s and their ratio
# (the goal: within 1.5x). Knobs: LUNS, READS (about 10 s of reads), SCRAPERS,
# SERIES (metrics_lun_series: per-LUN series for the most read LUNs; LUNS to see
# every LUN's), PROFILE (release).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=common.sh
. benches/common.sh
LUNS=${LUNS:-16384}
READS=${READS:-60000}
SERIES=${SERIES:-64}
SCRAPERS=${SCRAPERS:-2}
PROFILE=${PROFILE:-release}
flag=$([ "$PROFILE" = release ] && echo --release || true)
cargo build $flag --bin s3lun --bin s3lun-storm >/dev/null 2>&1
bin=target/$PROFILE
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

head -c $((64 << 20)) /dev/urandom >"$work/image.img"
{
  echo "listen = [\"127.0.0.1:$(port)\"]"
  echo "metrics_listen = \"127.0.0.1:$(port)\""
  echo "admin_socket = \"$work/admin.sock\""
  echo "metrics_lun_series = $SERIES"
  for i in $(seq 0 $((LUNS - 1))); do
    printf '[[lun]]\npath = "%s"\nidentity = "scrape-%05d"\n' "$work/image.img" "$i"
  done
} >"$work/s3lun.toml"
portal=$(sed -n 's/^listen = \["\(.*\)"\]/\1/p' "$work/s3lun.toml")
metrics=$(sed -n 's/^metrics_listen = "\(.*\)"/\1/p' "$work/s3lun.toml")
started=$(date +%s%N)
"$bin/s3lun" serve --config "$work/s3lun.toml" --target-name iqn.2026-12.org.s3lun:scrape \
  >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 1200); do grep -q "listening on" "$work/out" && break; sleep 0.1; done
grep -q "listening on" "$work/out" || { cat "$work/log"; exit 1; }
echo "s3lun up with $LUNS LUNs in $(( ($(date +%s%N) - started) / 1000000 )) ms"
size=$(python3 -c "import urllib.request,sys;print(len(urllib.request.urlopen('http://$metrics/metrics').read()))")
echo "/metrics is $size bytes"
lat() {
  "$bin/s3lun-storm" latency --portal "$portal" --target iqn.2026-12.org.s3lun:scrape \
    --image "$work/image.img" "$@"
}
lat --reads 3000 >/dev/null # warm the page cache and the session paths
alone=$(lat --reads "$READS")
scraped=$(lat --reads "$READS" --scrape "$metrics/metrics" --scrapers "$SCRAPERS" --every-ms 1000)
echo "alone:   $alone"
echo "scraped: $scraped"
python3 - "$alone" "$scraped" <<'PY'
import json, sys
a, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"4 KiB read p50: {a['p50_us']} us alone, {s['p50_us']} us with {s['scrapers']} scrapers "
      f"({s['scraped_bytes']} bytes scraped): ratio {s['p50_us'] / max(a['p50_us'], 1):.2f} (goal <= 1.5)")
PY
