#!/bin/busybox sh
# The guest kernel's module loader (/proc/sys/kernel/modprobe): this
# machine's modprobe, chrooted into the shared root, reading the unpacked
# kernel package's module tree. While /run/sockmon-guest-no-diag exists in
# the guest, sock_diag's handlers (netlink family 4: inet_diag, tcp_diag,
# udp_diag, ...) are refused, as on a machine that cannot load them.
if [ -e /host/run/sockmon-guest-no-diag ]; then
  case "$*" in *net-pf-16-proto-4-*|*_diag*) exit 1;; esac
fi
exec /bin/busybox chroot /host /sbin/modprobe -d @TREE@ "$@"
