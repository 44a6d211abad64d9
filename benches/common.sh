# Sourced by the benchmarks (from the repository's top):
#   port                         -> a free loopback port
#   listening PORT               -> waits (10 s at most) until something listens on it
#   tgt_start PORT CTL FILE IQN  -> Debian's tgt, the baseline target, on its own
#                                   control port, serving FILE read-only as LUN 1;
#                                   sets TGT_PID
#   tgt_stop CTL                 -> through the control port: offline, targets deleted
#                                   (sessions dropped), exit. tgtd ignores SIGTERM while
#                                   it has targets: a bench that only signals it leaves
#                                   it listening after the bench exits.
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
listening() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

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
