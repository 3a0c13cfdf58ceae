#!/bin/sh
# Example keepalived notify script for a full-tunnel vpnsyncd(8) cluster on
# Linux: the conntrackd(8) side of a VRRP transition. Install it as
# /usr/local/sbin/vpnsyncd-conntrackd (root-owned, not writable by others:
# keepalived's enable_script_security refuses it otherwise) and call it
# from the vrrp_sync_group of keepalived.conf (see the notify lines there):
#
#	vpnsyncd-conntrackd primary|backup|fault [CONNTRACKD-CONF]
#
# Why: the master translates the clients' traffic (SNAT to the public VIP,
# etc/examples/nftables-fullnat.nft), and that translation state is the
# kernel's. conntrackd in FTFW mode keeps a copy of the master's table in
# every backup's external cache; a backup that becomes master must put that
# copy into its own kernel before the clients' connections see a reply,
# else the first packet of each connection finds no state there and the
# connection is dropped or reset. These are the steps conntrackd's own
# primary-backup.sh documents, with conntrackd.conf passed through.
#
# regress/fullnat.sh runs this very file, with the lab's conntrackd.conf.
conf=${2:-/etc/conntrackd/conntrackd.conf}

# run OPTION WHAT: one conntrackd request; a failure is logged, not fatal
# (the next steps still matter, and keepalived ignores the exit status).
run() {
	conntrackd -C "$conf" "$1" || logger -t vpnsyncd-conntrackd "conntrackd $1 ($2) failed"
}

case ${1:-} in
primary)
	run -c "commit the external cache into the kernel table"
	run -f "flush the internal and external caches"
	run -R "resync the internal cache with the kernel table"
	run -B "send a bulk update to the backups"
	;;
backup)
	run -t "shorten the kernel timers of the entries this member no longer serves"
	run -n "ask the master for a resync"
	;;
fault)
	run -t "shorten the kernel timers of the entries this member no longer serves"
	;;
*)
	echo "usage: $0 primary|backup|fault [conntrackd.conf]" >&2
	exit 2
	;;
esac
