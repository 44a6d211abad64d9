#!/usr/bin/env bash
# Rebuilds assets/demo.squashfs, the image `s3lun serve --demo` serves.
set -euo pipefail
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
printf 'Hello from s3lun.\nThis squashfs was served over iSCSI by s3lun, a userspace read-only target.\n' >"$root/README.txt"
echo "s3lun-demo-marker" >"$root/marker"
mksquashfs "$root" "$(dirname "$0")/demo.squashfs" -noappend -all-root -mkfs-time 0 -no-progress -quiet
