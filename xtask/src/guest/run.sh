#!/bin/bash
# The test plan inside a guest (xtask/src/guest/): runs as root, chrooted
# into this machine's root (read-only; /tmp and /run are the guest's tmpfs).
# $1 is a plan file written by xtask that sets KERNEL_BIN, SYSTEM_BIN (the
# whole-system tests: its snapshot:: and daemon:: modules run here),
# SOCKMON_BIN, PKG_DIR and FORCE_KPROBES. Every step's start and end is a
# line starting with "@@sockmon-guest" on the serial console, which xtask reads.
set -u
. "$1"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export TMPDIR=/tmp HOME=/tmp RUST_BACKTRACE=1
# Software emulation is many times slower: the tests' deadlines stretch
# (sockmon/tests/support: `scaled`); nothing asserts speed.
export SOCKMON_TEST_TIME_SCALE=10
cd "$PKG_DIR" || exit 1
mark() { echo "@@sockmon-guest $*"; }
# step NAME COMMAND...: runs COMMAND, its output on the console between the
# step's begin and end lines.
step() {
  local name=$1 t0 t1 rc
  shift
  mark "begin $name"
  t0=$(date +%s%N)
  # Through a pipe: the test binaries then print no terminal colours.
  "$@" 2>&1 | cat
  rc=${PIPESTATUS[0]}
  t1=$(date +%s%N)
  mark "end $name rc=$rc ms=$(( (t1 - t0) / 1000000 ))"
}
mark "kernel $(uname -r) cpus=$(nproc)"
FALLBACK=snapshot::without_sock_diag_the_snapshot_comes_from_proc_net_with_exact_rows
DAEMON_FALLBACK=daemon::without_sock_diag_the_daemon_starts_from_proc_net_agrees_with_ss_and_says_so
AGREE=daemon::the_daemon_and_ss_agree_on_sockets_from_before_and_after_its_start

# 1. A kernel whose sock_diag modules cannot load: the snapshot falls back to
#    /proc/net by itself (exact rows), and the daemon starts, says so, and
#    agrees with `ss -tunap` (which falls back to /proc/net too).
: > /run/sockmon-guest-no-diag
export SOCKMON_TEST_DIAG_BLOCKED=1
step no-diag/snapshot "$SYSTEM_BIN" --exact "$FALLBACK"
step no-diag/daemon "$SYSTEM_BIN" --exact "$DAEMON_FALLBACK"
unset SOCKMON_TEST_DIAG_BLOCKED
rm -f /run/sockmon-guest-no-diag

# 2. Everything loadable: the real-kernel tests once per attach mode that
#    `sockmon modes --json` says loads here (auto first), then the snapshot
#    tests and the daemon's agreement with `ss -tunap`.
modes=auto
if out=$("$SOCKMON_BIN" modes --json 2>/dev/null); then
  more=$(jq -r '.modes | to_entries[] | select(.value.available and .key != "auto") | .key' <<<"$out" | tr '\n' ' ')
  modes="auto $more"
else
  mark "note no 'sockmon modes' yet: the kernel tests run once, in the default mode"
fi
mark "modes $modes"
for m in $modes; do
  step "kernel-tests/$m" env SOCKMON_TEST_ATTACH="$m" "$KERNEL_BIN"
done
# 3. Where kernel-function hooks load, `auto` mixes families per event kind
#    when some kinds cannot use them: leave bind and listen to the socket
#    layer (its `sock_ops` then serves listen but not TCP connect).
case " $modes " in
  *" kfunc "*)
    step kernel-tests/auto-mixed env SOCKMON_TEST_ATTACH=auto SOCKMON_KFUNC_SKIP=bind,listen "$KERNEL_BIN"
    # 4. The kprobe variant of the kfunc mode, forced (trampolines win
    #    wherever both load): in the guest whose plan asks for it.
    if [ "${FORCE_KPROBES:-0}" = 1 ]; then
      step kernel-tests/kfunc-kprobe env SOCKMON_TEST_ATTACH=kfunc SOCKMON_KFUNC_VIA=kprobe "$KERNEL_BIN"
    fi
    ;;
esac
step snapshot "$SYSTEM_BIN" snapshot::
step daemon-vs-ss "$SYSTEM_BIN" --exact "$AGREE"
mark "done"
