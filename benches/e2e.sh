#!/usr/bin/env bash
# End-to-end benchmark, one run on one machine: the same squashfs image served by
# s3lun (local file, and from S3 through a warm cache) and by tgt (Debian tgt,
# read-only LUN), driven by the same clients (libiscsi iscsi-perf, qemu-img), with
# the ratio s3lun/tgt per row; loopback TCP (iperf3) for reference; a cold S3 read
# through s3lun against the same read through an s3fs mount of the same moto server;
# and a boot storm of K cold readers with S3 bytes fetched / image bytes and the
# p50/p99 latency of a 4 KiB read during the storm.
#
# Needs (Debian): tgt, libiscsi-bin, qemu-utils + qemu-block-extra, iperf3, s3fs,
# squashfs-tools, bc; moto in target/venv (scripts/test installs it). Run as root.
# Knobs: SIZE_MB (image size, 256), SECS (per iscsi-perf row, 5), STORM (readers, 64),
# S3LUN_BIN (the s3lun binary to measure).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-256}
SECS=${SECS:-5}
STORM=${STORM:-64}

cargo build --release --bin s3lun --example latency_probe >/dev/null 2>&1
# S3LUN_BIN compares another build (an older commit's) on the same run's terms.
bin=${S3LUN_BIN:-target/release/s3lun}
probe=target/release/examples/latency_probe
work=$(mktemp -d)
pids=()
# shellcheck source=common.sh
. benches/common.sh
ctl=$((20000 + RANDOM % 10000))
cleanup() {
  s3fs_unmount "$work/s3fs"
  tgt_stop $ctl
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT


echo "building a ${SIZE_MB} MiB squashfs image..."
mkdir -p "$work/root"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$work/root/payload"
mksquashfs "$work/root" "$work/image.squashfs" -noappend -quiet -no-progress -noI -noD -noF
img="$work/image.squashfs"
iqn=iqn.2023-06.csm.iscsi:bench

# s3lun, local file
p_local=$(port)
$bin serve --listen 127.0.0.1:$p_local --target-name $iqn --nop-interval 0 --lun "$img" >/dev/null 2>"$work/s3lun-local.log" &
pids+=($!)
# tgt, read-only, on its own control port
p_tgt=$(port)
cp "$img" "$work/tgt.img"
tgt_start $p_tgt $ctl "$work/tgt.img" iqn.2001-04.com.example:bench
listening $p_tgt
# moto with the image uploaded (multipart), and s3lun from S3 with a warm cache
moto_start
pids+=("$MOTO_PID")
p_moto=$MOTO_PORT
s3_put "$img" PE/bench.squashfs
s3cfg() {
  cat <<CFG
[s3]
endpoint = "http://127.0.0.1:$p_moto"
access_key = "test"
secret_key = "test"
[cache]
dir = "$1"
[[lun]]
s3 = "s3://boot-images/PE/bench.squashfs"
CFG
}
s3cfg "$work/cache-warm" >"$work/warm.toml"
$bin warm --config "$work/warm.toml" >/dev/null
p_s3=$(port)
$bin serve --config "$work/warm.toml" --listen 127.0.0.1:$p_s3 --target-name $iqn --nop-interval 0 >/dev/null 2>"$work/s3lun-s3.log" &
pids+=($!)
listening $p_local
listening $p_s3

u_local=iscsi://127.0.0.1:$p_local/$iqn/0
u_s3=iscsi://127.0.0.1:$p_s3/$iqn/0
u_tgt=iscsi://127.0.0.1:$p_tgt/iqn.2001-04.com.example:bench/1
cat "$img" >/dev/null

perf() { # url qd blocks [-r] -> "iops mbps"
  local out
  out=$(timeout $((SECS + 10)) iscsi-perf -t "$SECS" -m "$2" -b "$3" ${4:-} "$1" 2>&1 | tr '\r' '\n' | grep "iops average" | tail -1)
  echo "$out" | sed -E 's/.*iops average ([0-9]+) \(([0-9]+) MB\/s\).*/\1 \2/'
}
ratio() { echo "scale=2; $1 / $2" | bc; }
printf '\n%-22s %12s %12s %12s %8s %8s\n' "row" "s3lun" "s3lun-s3" "tgt" "ratio" "s3/tgt"
row() { # name qd blocks flag unit(iops|mbps)
  read -r li lm < <(perf "$u_local" "$2" "$3" "${4:-}")
  read -r si sm < <(perf "$u_s3" "$2" "$3" "${4:-}")
  read -r ti tm < <(perf "$u_tgt" "$2" "$3" "${4:-}")
  if [ "$5" = iops ]; then a=$li b=$si c=$ti; else a=$lm b=$sm c=$tm; fi
  printf '%-22s %12s %12s %12s %8s %8s\n' "$1 ($5)" "$a" "$b" "$c" "$(ratio "$a" "$c")" "$(ratio "$b" "$c")"
}
row "4K qd1 seq" 1 8 "" iops
row "4K qd1 rand" 1 8 -r iops
row "4K qd32 seq" 32 8 "" iops
row "4K qd32 rand" 32 8 -r iops
row "64K qd8 seq" 8 128 "" mbps
row "64K qd8 rand" 8 128 -r mbps
row "1M qd4 seq" 4 2048 "" mbps
row "1M qd4 rand" 4 2048 -r mbps
convert_mbps() { # best of three runs into a pre-created file (no file creation cost)
  local s e best=0 mbps
  truncate -s $(( ($(stat -c %s "$img") + 511) / 512 * 512 )) "$work/out.raw"
  for _ in 1 2 3; do
    s=$(date +%s.%N)
    qemu-img convert -n -f raw -O raw "$1" "$work/out.raw"
    e=$(date +%s.%N)
    mbps=$(echo "scale=0; $(stat -c %s "$work/out.raw") / 1000000 / ($e - $s)" | bc)
    [ "$mbps" -gt "$best" ] && best=$mbps
  done
  echo "$best"
}
a=$(convert_mbps "$u_local"); b=$(convert_mbps "$u_s3"); c=$(convert_mbps "$u_tgt")
printf '%-22s %12s %12s %12s %8s %8s\n' "qemu-img convert (MB/s)" "$a" "$b" "$c" "$(ratio "$a" "$c")" "$(ratio "$b" "$c")"

iperf3 -s -1 -p $((p_local + 1)) >/dev/null 2>&1 &
sleep 0.5
loop=$(iperf3 -c 127.0.0.1 -p $((p_local + 1)) -t 3 -f m 2>/dev/null | awk '/receiver/ {print $(NF-2)}')
loop_mbs=$(echo "scale=0; $loop / 8" | bc)
read -r _ seq1m < <(perf "$u_local" 4 2048 "")
echo
echo "loopback TCP, one stream: ${loop_mbs} MB/s; s3lun 1M qd4 sequential: ${seq1m} MB/s ($(echo "scale=0; 100 * $seq1m / $loop_mbs" | bc)% of loopback)"

cold_mbps() { # the first read is the cold one: pre-create the output instead
  local s e
  rm -f "$work/out.raw"
  truncate -s $(( ($(stat -c %s "$img") + 511) / 512 * 512 )) "$work/out.raw"
  s=$(date +%s.%N)
  qemu-img convert -n -f raw -O raw "$1" "$work/out.raw"
  e=$(date +%s.%N)
  echo "scale=0; $(stat -c %s "$work/out.raw") / 1000000 / ($e - $s)" | bc
}
# Cold S3: s3lun with an empty cache against an s3fs mount, same moto server.
s3cfg "$work/cache-cold" >"$work/cold.toml"
p_cold=$(port)
$bin serve --config "$work/cold.toml" --listen 127.0.0.1:$p_cold --target-name $iqn --nop-interval 0 >/dev/null 2>"$work/s3lun-cold.log" &
pids+=($!)
listening $p_cold
cold=$(cold_mbps "iscsi://127.0.0.1:$p_cold/$iqn/0")
s3fs_mount "$work/s3fs" "http://127.0.0.1:$p_moto"
s=$(date +%s.%N)
cat "$work/s3fs/PE/bench.squashfs" >/dev/null
e=$(date +%s.%N)
s3fs_mbs=$(echo "scale=0; $(stat -c %s "$img") / 1000000 / ($e - $s)" | bc)
s3fs_unmount "$work/s3fs"
echo "cold S3 read: s3lun ${cold} MB/s, s3fs ${s3fs_mbs} MB/s, ratio $(ratio "$cold" "$s3fs_mbs")"

# Boot storm: STORM cold readers of the same image, plus a 4 KiB latency probe.
s3cfg "$work/cache-storm" >"$work/storm.toml"
echo "metrics_listen = \"127.0.0.1:$((p_cold + 2))\"" | cat - "$work/storm.toml" >"$work/storm2.toml"
p_storm=$(port)
$bin serve --config "$work/storm2.toml" --listen 127.0.0.1:$p_storm --target-name $iqn --nop-interval 0 >/dev/null 2>"$work/s3lun-storm.log" &
pids+=($!)
listening $p_storm
s=$(date +%s.%N)
$probe 127.0.0.1:$p_storm $iqn 300 "$work/storm-over" >"$work/probe.txt" 2>&1 &
probe_pid=$!
readers=()
# Readers discard what they read (qemu's null-co driver): 64 copies of the image on
# this machine's disk would measure the disk, not the target.
lun_bytes=$(( ($(stat -c %s "$img") + 511) / 512 * 512 ))
for i in $(seq "$STORM"); do
  qemu-img convert -n --target-image-opts -f raw "iscsi://127.0.0.1:$p_storm/$iqn/0" "driver=null-co,size=$lun_bytes" &
  readers+=($!)
done
for r in "${readers[@]}"; do wait "$r"; done
e=$(date +%s.%N)
touch "$work/storm-over"
wait $probe_pid || true
metrics=$(curl -s "127.0.0.1:$((p_cold + 2))/metrics")
fetched=$(echo "$metrics" | awk '/^s3lun_s3_bytes_total/ {print $2}')
sent=$(echo "$metrics" | awk '/^s3lun_sent_bytes_total/ {print $2}')
echo "boot storm: $STORM readers in $(echo "scale=1; ($e - $s) / 1" | bc) s ($(echo "scale=0; $sent / 1000000 / ($e - $s)" | bc) MB/s of Data-In); S3 bytes / image bytes = $(echo "scale=3; $fetched / $(stat -c %s "$img")" | bc); 4 KiB reads during the storm: $(cat "$work/probe.txt")"
