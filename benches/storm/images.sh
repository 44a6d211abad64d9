#!/usr/bin/env bash
# Builds the two images the boot traces were recorded on, under target/storm/:
#  - small.squashfs: a busybox root (what a minimal init mounts and reads);
#  - debian.squashfs: a few hundred MiB of this machine's real Debian files (/usr/bin,
#    /usr/sbin, the libraries, python3.11, perl, /etc), with boot-files.list: the
#    files real programs open when they start (bash, python3 importing common
#    modules, perl, systemctl, ip, ...), found with strace on this machine, in the
#    order they were opened.
# Each image holds boot-files.list, which the guest's init reads file by file.
# mksquashfs runs with fixed times and sorted input, so the same files give the same
# image (and the recorded trace's addresses mean the same blocks).
# Needs squashfs-tools, busybox-static and strace. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../../target/storm"
mkdir -p "$out"
squash() { # dir image
  mksquashfs "$1" "$2" -noappend -quiet -no-progress -all-root -mkfs-time 0 -all-time 0 -no-xattrs >/dev/null
}

if [ ! -f "$out/small.squashfs" ]; then
  r="$out/small-root"
  rm -rf "$r" && mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev}
  cp /bin/busybox "$r/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' >"$r/sbin/init"
  echo "s3lun-storm-small" >"$r/etc/marker"
  # A 2 MiB file of fixed content, as the boot tests' big.bin.
  python3 -c 'import sys, hashlib
b = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(65536))
sys.stdout.buffer.write(b)' >"$r/big.bin"
  printf '%s\n' bin/busybox sbin/init etc/marker big.bin >"$r/boot-files.list"
  squash "$r" "$out/small.squashfs"
  rm -rf "$r"
fi

if [ ! -f "$out/debian.squashfs" ]; then
  r="$out/debian-root"
  rm -rf "$r" && mkdir -p "$r"
  # What programs open as they start, in order: a boot's file set.
  opened="$out/opened.txt"
  : >"$opened"
  # shellcheck disable=SC2016
  for cmd in "bash -lc true" \
    "/usr/bin/python3.11 -c import\ json,ssl,asyncio,subprocess,logging,argparse,email,http.client,sqlite3,uuid" \
    "perl -MPOSIX -MFile::Temp -MData::Dumper -e 1" \
    "systemctl --version" "ip addr" "ls -l /usr" "ps aux" "df -h" "mount" "find /etc -maxdepth 1" \
    "journalctl --version" "gzip --version" "tar --version" "openssl version" "curl --version" "ssh -V"; do
    # shellcheck disable=SC2086
    strace -f -e trace=open,openat,execve -o "$out/strace.txt" $cmd >/dev/null 2>&1 || true
    grep -oE '(open|openat|execve)\(([A-Z_]+, )?"[^"]+"' "$out/strace.txt" | sed -E 's/.*"([^"]+)"$/\1/' >>"$opened" || true
  done
  rm -f "$out/strace.txt"
  trees=(/usr/bin /usr/sbin /usr/lib/systemd /usr/lib/python3.11 /usr/share/perl /etc)
  for t in "${trees[@]}"; do
    [ -d "$t" ] || continue
    mkdir -p "$r$(dirname "$t")"
    cp -a "$t" "$r$t" 2>/dev/null || true
  done
  # The libraries the opened programs load, wherever they live.
  : >"$r/boot-files.list"
  awk '!seen[$0]++' "$opened" | while read -r f; do
    f=$(readlink -f "$f" 2>/dev/null) || continue
    [ -f "$f" ] || continue
    case "$f" in /proc/* | /sys/* | /dev/* | /tmp/* | /root/* | /work/*) continue ;; esac
    [ -e "$r$f" ] || { mkdir -p "$r$(dirname "$f")" && cp -a "$f" "$r$f" 2>/dev/null; } || continue
    echo "${f#/}" >>"$r/boot-files.list"
  done
  squash "$r" "$out/debian.squashfs"
  rm -rf "$r"
fi
ls -l "$out"/*.squashfs | awk '{print $5, $9}'
