#!/bin/busybox sh
# The guest's first process (PID 1 of the initramfs built by
# xtask/src/guest/initramfs.rs). It loads the virtio and 9p modules copied into
# the initramfs, mounts this machine's root read-only over virtio-9p at /host,
# gives the guest its own proc, sys, dev, tracefs, bpffs, cgroup2 and tmpfs
# /tmp and /run, runs the test script chrooted into /host, and powers off.
# Placeholders (@NAME@) are filled in by xtask.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
left="$($B cat /modules.order)"
for pass in 1 2 3 4; do
  next=""
  for m in $left; do $B insmod /lib/mod/$m 2>/dev/null || next="$next $m"; done
  left="$next"
  [ -z "$left" ] && break
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || echo "@@sockmon-guest fatal 9p mount failed"
for d in proc sys dev; do $B mount --bind /$d /host/$d; done
# The kernel asks /bin/modprobe-host (below, in this initramfs) for modules.
echo /bin/modprobe-host > /proc/sys/kernel/modprobe
# Paths the tests need that lie under /tmp or /run would be hidden by the
# tmpfs mounts: keep them visible through bind mounts.
i=0
for p in @KEEP@; do
  case "$p" in /tmp/*|/run/*) $B mkdir -p /keep/$i; $B mount --bind "/host$p" /keep/$i;; esac
  i=$((i+1))
done
$B mount -t tmpfs tmp /host/tmp
$B mount -t tmpfs run /host/run
$B mkdir -p /host/run/lock
i=0
for p in @KEEP@; do
  case "$p" in /tmp/*|/run/*) $B mkdir -p "/host$p"; $B mount --bind /keep/$i "/host$p";; esac
  i=$((i+1))
done
$B mount -t tracefs nodev /host/sys/kernel/tracing 2>/dev/null
$B mount -t bpf bpf /host/sys/fs/bpf 2>/dev/null
$B mount -t tmpfs cg /host/sys/fs/cgroup 2>/dev/null
$B mkdir -p /host/sys/fs/cgroup/unified
$B mount -t cgroup2 none /host/sys/fs/cgroup/unified || echo "@@sockmon-guest fatal cgroup2 mount failed"
$B ip link set lo up 2>/dev/null || $B ifconfig lo 127.0.0.1 up
$B chroot /host /bin/bash @SCRIPT@ @PLAN@
echo "@@sockmon-guest poweroff"
$B poweroff -f
