#!/bin/bash
# Boots Debian's systemd as PID 1 of a new PID + mount namespace, on an
# overlay of / whose writes land in a tmpfs, so that a test can install and
# run sockmon.service under a real systemd without touching the host.
#
# Run it only as the first process of a new PID and mount namespace:
#
#     unshare --fork --pid --mount --propagation private --kill-child \
#         packaging/test/systemd-sandbox-boot.sh
#
# It refuses to run otherwise. NEVER boot systemd on the host's own file
# system: at boot `systemd-tmpfiles --remove` empties /tmp, and a mount
# namespace alone protects no file. Here:
#
# - every mount is made in this private mount namespace: nothing propagates
#   to the host, and everything is gone when the namespace's last process is;
# - the base of it all is a tmpfs mounted over /run *in this namespace*, so
#   not even a directory is created on the host;
# - / is an overlay (lower: the host's /, read only; upper: that tmpfs), so
#   whatever systemd, tmpfiles or a unit writes lands in memory;
# - /run, /tmp and /dev are fresh tmpfs (with the few device nodes systemd and
#   the unit need bound in), so tmpfiles cannot touch the host's device nodes;
# - /proc is new, with /proc/sys read only (sysctls are mostly global);
# - /sys is the host's, read only at its top (so udev does not start and
#   trigger the host's devices), with the cgroup and tracefs mounts below it
#   as they are (systemd needs the cgroup ones writable);
# - systemd boots into a small target of its own (sysinit only), not into the
#   host's default target: no host service (databases, timers) starts;
# - resource accounting is off, so systemd creates cgroups only in the
#   name=systemd and unified hierarchies, below the one it was started in
#   (the caller puts it in a cgroup of its own and removes that afterwards).
#
# Arguments: none. Environment:
# - SDTEST_CGROUP=NAME: first move into the cgroup NAME below the root of each
#   of /sys/fs/cgroup/{unified,systemd,} where the caller created it (systemd
#   then keeps all it creates below it, and the caller removes it at the end);
# - SDTEST_BIND=DIR[:DIR...]: bind these host directories, read only, at
#   the same place in the sandbox (e.g. the directory of the binary under test,
#   in case it is on a file system other than /'s, which the overlay would not show);
# - SDTEST_TRACEFS=unmounted: hide tracefs from the sandbox (to check that
#   the service mounts it itself when it is missing).
set -euo pipefail

die() { echo "systemd-sandbox-boot: $*" >&2; exit 1; }

[ "$$" = 1 ] || die "must run as PID 1 of a new PID namespace (see the header)"
# /proc is still the host's here: /proc/1 is the host's init, /proc/self is us.
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
    die "must run in a mount namespace of its own"
mount --make-rprivate /

if [ -n "${SDTEST_CGROUP:-}" ]; then
    for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
        if [ -e "$d/$SDTEST_CGROUP/cgroup.procs" ]; then echo 0 > "$d/$SDTEST_CGROUP/cgroup.procs"; fi
    done
fi

B=/run/sockmon-sdtest
mount -t tmpfs -o mode=0700 sockmon-sdtest /run
mkdir -p $B/upper $B/work $B/root
mount -t overlay overlay -o lowerdir=/,upperdir=$B/upper,workdir=$B/work $B/root
R=$B/root

# /dev: a tmpfs with the pseudo-devices bound in.
mount -t tmpfs -o mode=0755,nosuid,size=4m sockmon-sdtest-dev $R/dev
for n in null zero full random urandom tty; do
    touch $R/dev/$n
    mount --bind /dev/$n $R/dev/$n
done
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts
ln -s pts/ptmx $R/dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/dev/shm
ln -s /proc/self/fd $R/dev/fd
ln -s /proc/self/fd/0 $R/dev/stdin
ln -s /proc/self/fd/1 $R/dev/stdout
ln -s /proc/self/fd/2 $R/dev/stderr

# /sys: the host's, read only at the top; cgroup and tracefs mounts below as they are.
mount --rbind /sys $R/sys
mount -o remount,bind,ro $R/sys
if [ "${SDTEST_TRACEFS:-}" = unmounted ]; then
    for t in $R/sys/kernel/debug/tracing $R/sys/kernel/debug $R/sys/kernel/tracing; do
        if mountpoint -q $t; then umount -l $t; fi
    done
fi

# /proc: a fresh one, with the kernel's global knobs read only (sysctls are
# not namespaced: systemd-sysctl would otherwise apply the distribution's
# defaults to the host's kernel).
mount -t proc proc $R/proc
for p in sys sysrq-trigger; do
    [ -e $R/proc/$p ] || continue
    mount --bind $R/proc/$p $R/proc/$p
    mount -o remount,bind,ro $R/proc/$p
done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $R/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/tmp

# Last, so that no mount above hides them.
IFS=: read -r -a binds <<< "${SDTEST_BIND:-}"
for d in "${binds[@]}"; do
    [ -n "$d" ] || continue
    [ -d "$d" ] || die "SDTEST_BIND: $d is not a directory"
    mkdir -p "$R$d"
    mount --bind "$d" "$R$d"
    mount -o remount,bind,ro "$R$d"
done

# A target of our own (sysinit only), and no resource accounting.
mkdir -p $R/etc/systemd/system $R/etc/systemd/system.conf.d
cat > $R/etc/systemd/system/sockmon-sandbox.target <<'UNIT'
[Unit]
Description=sockmon test sandbox (sysinit only)
Requires=sysinit.target
After=sysinit.target
AllowIsolate=yes
UNIT
if [ "${SDTEST_TRACEFS:-}" = unmounted ]; then
    # and systemd must not mount it at boot either
    ln -sf /dev/null $R/etc/systemd/system/sys-kernel-tracing.mount
    ln -sf /dev/null $R/etc/systemd/system/sys-kernel-debug.mount
fi
cat > $R/etc/systemd/system.conf.d/sockmon-sandbox.conf <<'CONF'
[Manager]
DefaultCPUAccounting=no
DefaultIOAccounting=no
DefaultIPAccounting=no
DefaultMemoryAccounting=no
DefaultTasksAccounting=no
DefaultBlockIOAccounting=no
CONF

cd $R
exec chroot . env container=other /lib/systemd/systemd --system \
    --unit=sockmon-sandbox.target --log-target=console --log-level=notice --show-status=no
