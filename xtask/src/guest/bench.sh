#!/bin/bash
# The benchmark plan inside a guest (xtask/src/guest/, `cargo xtask bench
# --kernel debian-...`): runs as root, chrooted into this machine's root
# (read-only; /tmp and /run are the guest's tmpfs). $1 is a plan file that
# sets XTASK_BIN (the host's release build) and ROUNDS. The report's
# markdown comes back on the serial console, every line prefixed
# "@@sockmon-guest md ", between the "begin bench" and "end bench" marks.
set -u
. "$1"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export TMPDIR=/tmp HOME=/tmp
mark() { echo "@@sockmon-guest $*"; }
mark "kernel $(uname -r) cpus=$(nproc)"
cd /tmp || exit 1
mark "begin bench"
t0=$(date +%s%N)
# Already built on the host: no setup, no build, no re-exec.
SOCKMON_BENCH_PREPARED=1 "$XTASK_BIN" bench --part rate --rounds "$ROUNDS" --in-guest \
  2>/tmp/bench.log | sed 's/^/@@sockmon-guest md /'
rc=${PIPESTATUS[0]}
tail -n 40 /tmp/bench.log | sed 's/^/@@sockmon-guest log /'
mark "end bench rc=$rc ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
mark "done"
