#!/usr/bin/env bash
# Records the boot traces in benches/storm/traces/: a real kernel (the boot tests'
# Debian cloud kernel, in QEMU) logs in with iscsistart, mounts each image of
# images.sh as squashfs and reads the files its boot-files.list names, while
# `s3lun-storm record` sits between it and s3lun writing down every READ (LBA,
# length, issue and completion time).
#   small.trace:  the mount plus a minimal init's files (busybox, init, a 2 MiB file);
#   debian.trace: the files real programs open as they start, on a Debian root.
# Runs QEMU with TCG as the boot tests do (KVM=1 uses KVM, closer to hardware's think
# times, where nested virtualisation works: it crashed the guest on the machine the
# committed traces were recorded on).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=common.sh
. benches/common.sh
cargo build --release --bin s3lun --bin s3lun-storm >/dev/null 2>&1
bash protocol-tests/kernel/prepare.sh >/dev/null
bash benches/storm/images.sh >/dev/null
assets=target/kernel-boot
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cp -a "$assets/root" "$work/root"
cp benches/storm/guest-init "$work/root/init"
(cd "$work/root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")
accel=tcg
[ "${KVM:-0}" = 1 ] && accel=kvm

for name in small debian; do
  img=target/storm/$name.squashfs
  target=iqn.2023-06.csm.iscsi:record
  p_t=$(port)
  p_r=$(port)
  target/release/s3lun serve --listen 127.0.0.1:"$p_t" --target-name $target --lun "$img" \
    --admin-socket "$work/admin-$name.sock" >/dev/null 2>"$work/s3lun-$name.log" &
  pids+=($!)
  target/release/s3lun-storm record --listen 127.0.0.1:"$p_r" --upstream 127.0.0.1:"$p_t" \
    --out "$work/$name.trace" --image-bytes "$(stat -c %s "$img")" 2>"$work/record-$name.log" &
  pids+=($!)
  sleep 1
  timeout 400 qemu-system-x86_64 -accel $accel -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$assets/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 s3lun.addr=10.0.2.2 s3lun.port=$p_r s3lun.target=$target" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null >"$work/guest-$name.log" 2>&1 || true
  grep -q "S3LUN-GUEST: done" "$work/guest-$name.log" || { cat "$work/guest-$name.log"; exit 1; }
  grep "S3LUN-GUEST: read" "$work/guest-$name.log"
  for _ in $(seq 50); do [ -s "$work/$name.trace" ] && break; sleep 0.1; done
  cp "$work/$name.trace" benches/storm/traces/"$name".trace
  echo "$name: $(target/release/s3lun-storm info benches/storm/traces/"$name".trace)"
done
