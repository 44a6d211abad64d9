# Sourced by the kernel asset scripts: copy kernel modules and what they depend on
# (read from each module's own "depends=" field) into an initramfs root, in load
# order, listed in <root>/modules.order for its init to insmod.
# Usage: pack_modules MODULES_DIR ROOT NAME...
pack_modules() {
  local mods=$1 root=$2
  shift 2
  local -A seen=()
  local order=()
  visit() {
    local name=$1 f d
    [ -n "${seen[$name]:-}" ] && return
    seen[$name]=1
    f=$(find "$mods" \( -name "$name.ko" -o -name "${name//_/-}.ko" \) | head -1)
    [ -z "$f" ] && return
    for d in $(strings "$f" | sed -n 's/^depends=//p' | tr ',' ' '); do visit "$d"; done
    order+=("$f")
  }
  for m in "$@"; do visit "$m"; done
  mkdir -p "$root/lib/modules"
  : >"$root/modules.order"
  for f in "${order[@]}"; do
    cp "$f" "$root/lib/modules/"
    basename "$f" >>"$root/modules.order"
  done
}
