# Sourced by the benchmarks (from the repository's top):
#   port                         -> a free loopback port
#   listening PORT               -> waits (10 s at most) until something listens on it
#   moto_start                   -> moto's S3 server (target/venv) on a free port with
#                                   the bucket boot-images; sets MOTO_PORT, MOTO_PID
#   s3_put FILE KEY              -> uploads FILE as boot-images/KEY (multipart)
#   s3fs_mount DIR URL           -> the bucket mounted read-only by s3fs at DIR from
#                                   the S3 endpoint URL; sets S3FS_PID
#   s3fs_unmount DIR
#   tgt_start PORT CTL FILE IQN  -> Debian's tgt, the baseline target, on its own
#                                   control port, serving FILE read-only as LUN 1;
#                                   sets TGT_PID
#   tgt_stop CTL                 -> through the control port: offline, targets deleted
#                                   (sessions dropped), exit. tgtd ignores SIGTERM while
#                                   it has targets: a bench that only signals it leaves
#                                   it listening after the bench exits.
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
listening() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

moto_start() {
  MOTO_PORT=$(port)
  target/venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
  MOTO_PID=$!
  listening "$MOTO_PORT"
  target/venv/bin/python3 protocol-tests/s3/s3ctl.py "http://127.0.0.1:$MOTO_PORT" mkbucket boot-images
}

s3_put() {
  target/venv/bin/python3 protocol-tests/s3/s3ctl.py "http://127.0.0.1:$MOTO_PORT" \
    put boot-images "$2" "$1" --multipart >/dev/null
}

s3fs_mount() {
  local dir=$1 url=$2
  mkdir -p "$dir"
  echo "test:test" >"$dir.passwd" && chmod 600 "$dir.passwd"
  s3fs boot-images "$dir" -f -o ro -o url="$url" -o use_path_request_style \
    -o passwd_file="$dir.passwd" >/dev/null 2>&1 &
  S3FS_PID=$!
  for _ in $(seq 100); do mountpoint -q "$dir" && return 0; sleep 0.1; done
  return 1
}

s3fs_unmount() {
  fusermount -u "$1" 2>/dev/null || true
  wait "${S3FS_PID:-}" 2>/dev/null || true
}

tgt_start() {
  local port=$1 ctl=$2 file=$3 iqn=$4
  tgtd -f -C "$ctl" --iscsi portal=127.0.0.1:"$port" >/dev/null 2>&1 &
  TGT_PID=$!
  for _ in $(seq 100); do tgtadm -C "$ctl" --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
  tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn"
  tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$file"
  tgtadm -C "$ctl" --lld iscsi --op update --mode logicalunit --tid 1 --lun 1 --params readonly=1
  tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL
}

tgt_stop() {
  local ctl=$1 pid=${TGT_PID:-}
  tgtadm -C "$ctl" --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
  tgtadm -C "$ctl" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
  tgtadm -C "$ctl" --op delete --mode system >/dev/null 2>&1 || true
  if [ -n "$pid" ]; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # Only if the control socket failed: never leave it listening.
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  TGT_PID=
}
