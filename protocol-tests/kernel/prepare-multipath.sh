#!/usr/bin/env bash
# Builds what the multipath kernel test needs under target/kernel-mpath/: Debian's
# generic kernel of the same release as the cloud one (the cloud kernel has no SCSI
# device handlers; this one has scsi_dh_alua and dm-multipath as modules), and an
# initramfs with busybox, open-iscsi's iscsid and iscsiadm, multipath-tools
# (multipathd, multipath and their checker and prioritizer plugins), the libraries
# they need, and /mpath-init. Packages are downloaded and extracted, not installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=download.sh
. "$here/download.sh"
out="$here/../../target/kernel-mpath"
mkdir -p "$here/../../target"
exec 9>"$here/../../target/kernel-mpath.lock"
flock 9
[ -f "$out/ready" ] && exit 0
rm -rf "$out" && mkdir -p "$out/debs" "$out/x"
cd "$out/debs"
download linux-image-amd64
kpkg=$(dpkg-deb -f linux-image-amd64_*.deb Depends | sed -n 's/.*\(linux-image-[^ ,]*\).*/\1/p' | head -1)
download "$kpkg" open-iscsi libopeniscsiusr multipath-tools libdevmapper1.02.1 \
  libaio1 liburcu8 libjson-c5 libedit2 dmsetup
for d in *.deb; do dpkg-deb -x "$d" "$out/x"; done
kver=$(ls "$out/x/lib/modules" | head -1)
cp "$out/x/boot/vmlinuz-$kver" "$out/vmlinuz"

root="$out/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,lib,lib64,mnt,run,tmp,lib/modules,lib/multipath}
cp /bin/busybox "$root/bin/busybox"
cp "$here/mpath-init" "$root/init"
mkdir -p "$root/lib/x86_64-linux-gnu"
libpath="$out/x/lib:$out/x/lib/x86_64-linux-gnu:$out/x/usr/lib/x86_64-linux-gnu"
cp "$out"/x/lib/multipath/*.so "$root/lib/multipath/"
for b in sbin/iscsid sbin/iscsiadm sbin/multipathd sbin/multipath sbin/dmsetup; do
  cp "$out/x/$b" "$root/sbin/"
done
for f in "$root"/sbin/* "$root"/lib/multipath/*.so; do
  for l in $(LD_LIBRARY_PATH="$libpath" ldd "$f" | awk '/=> \//{print $3} /ld-linux/{print $1}'); do
    cp -L "$l" "$root/lib/x86_64-linux-gnu/"
  done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# Loaded at run time (pthread_cancel in multipathd), so ldd does not list it.
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/"

# Modules in dependency order; crc32c: the generic kernel has it as a module (for
# digests), which iscsi_tcp loads by name.
. "$here/modules.sh"
pack_modules "$out/x/lib/modules/$kver" "$root" virtio_pci virtio_net crc32c_generic \
  scsi_dh_alua iscsi_tcp sd_mod squashfs dm_service_time dm_round_robin
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$out/initrd.gz")
touch "$out/ready"
echo "multipath kernel assets ready: $kver"
