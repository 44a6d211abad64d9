#!/usr/bin/env bash
# Builds what the kernel boot tests need under target/kernel-boot/: a Debian cloud
# kernel and its iSCSI, virtio and squashfs modules, extracted from the package (not
# installed), and an initramfs with busybox, open-iscsi's iscsistart, iscsid and
# iscsiadm and their libraries (init: /init logs in once; /restart-init runs iscsid
# and reads in rounds across target restarts).
# Also a dracut initramfs (modules base, iscsi, network-legacy) for the same kernel,
# as compute nodes boot with. Needs apt-get (download only), busybox-static,
# qemu-system-x86, kmod, dracut, dracut-network and open-iscsi (scripts/test installs
# them). dracut only looks for modules in /lib/modules/<version>: unless a kernel of
# that version is installed, a symlink to the extracted modules is placed there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=download.sh
. "$here/download.sh"
out="$here/../../target/kernel-boot"
mkdir -p "$here/../../target"
# Tests run in parallel: one builds, the others wait for it.
exec 9>"$here/../../target/kernel-boot.lock"
flock 9
[ -f "$out/ready" ] && exit 0
rm -rf "$out" && mkdir -p "$out/debs" "$out/x"
cd "$out/debs"
download linux-image-cloud-amd64
kpkg=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | sed -n 's/.*\(linux-image-[^ ,]*\).*/\1/p' | head -1)
download "$kpkg" open-iscsi libopeniscsiusr
for d in *.deb; do dpkg-deb -x "$d" "$out/x"; done
kver=$(ls "$out/x/lib/modules" | head -1)
cp "$out/x/boot/vmlinuz-$kver" "$out/vmlinuz"

root="$out/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,lib,lib64,mnt,run,tmp,lib/modules}
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"
cp "$here/restart-init" "$root/restart-init"
mkdir -p "$root/lib/x86_64-linux-gnu"
# iscsistart (one-shot login), iscsid and iscsiadm (a daemon that recovers sessions
# when the target goes away and comes back), and their shared libraries: from the
# extracted packages first, then the host.
for b in iscsistart iscsid iscsiadm; do
  cp "$out/x/sbin/$b" "$root/sbin/$b"
  libs=$(LD_LIBRARY_PATH="$out/x/usr/lib/x86_64-linux-gnu" ldd "$root/sbin/$b" | awk '/=> \//{print $3} /ld-linux/{print $1}')
  for l in $libs; do
    cp -L "$l" "$root/lib/x86_64-linux-gnu/"
  done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"

# Modules in dependency order.
. "$here/modules.sh"
mods="$out/x/lib/modules/$kver"
pack_modules "$mods" "$root" virtio_pci virtio_net iscsi_tcp sd_mod squashfs
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$out/initrd.gz")

depmod -b "$out/x" "$kver"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ -L "/lib/modules/$kver" ] || [ ! -e "/lib/modules/$kver" ]; then
  $SUDO mkdir -p /lib/modules
  $SUDO ln -sfn "$mods" "/lib/modules/$kver"
fi
dracut --no-hostonly --force --kver "$kver" \
  --modules "base iscsi network-legacy" \
  --add-drivers "virtio_net virtio_pci squashfs sd_mod iscsi_tcp" \
  --omit "systemd systemd-initrd dracut-systemd plymouth" \
  "$out/dracut.img" >"$out/dracut.log" 2>&1 || { cat "$out/dracut.log"; exit 1; }
touch "$out/ready"
echo "kernel boot assets ready: $kver"
