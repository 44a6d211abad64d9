#!/usr/bin/env bash
# The catalog at site scale (see benches/catalog_scale.py): 10,000 manifests and
# 1,000 PE objects in moto, the first scan, an unchanged rescan and a rescan after
# 10 images changed (time and S3 requests), RSS, and REPORT LUNS through iscsi-ls.
# Knobs: M (manifests), P (PE objects), C (changed images), OBJECT_BYTES.
# Needs moto in target/venv (scripts/test installs it) and libiscsi-bin.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin s3lun >/dev/null 2>&1
exec target/venv/bin/python3 benches/catalog_scale.py target/release/s3lun target/venv/bin/moto_server
