#!/usr/bin/env bash
# A full tunnel whose NAT state survives a failover: two servers under
# keepalived, a stock OpenVPN 2.6 client with `push redirect-gateway def1`,
# an outside router with an outside host (the internet). The master
# translates the client's traffic to the public VIP with the example
# ruleset (etc/examples/nftables-fullnat.nft: SNAT to the VIP, the same
# source address whichever member is master), conntrackd in FTFW mode
# syncs the kernel's NAT table over a dedicated link between the servers
# (etc/examples/conntrackd.conf), and keepalived's notify lines of the
# example (etc/examples/keepalived.conf, conntrackd-notify.sh) commit it
# into the new master's kernel when it takes over.
#
#   1  a TCP stream from the outside host to the client through NAT; the
#      master loses power; the same connection goes on through the new
#      master: no RST, every byte in order, 1 MiB more after the takeover
#   2  the control: the same without conntrackd: the tunnel survives (a
#      new ping through NAT answers), the open connection does not (no
#      byte more reaches the client) - the check of case 1 can fail
#
# The outside host streams to the client (and not the other way) so that
# the first packet at the new master is the outside host's retransmission:
# with the synced state it is translated back into the tunnel, without it
# it is dropped, deterministically. FULLNAT_CASES="1" runs a subset.
# About a minute.
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived conntrackd nft python3

CASES=${FULLNAT_CASES:-1 2}
EX=$TOP/etc/examples
STREAM=$REGRESS_DIR/tcpstream.py
ROUTER=198.18.0.1   # the outside router: the default gateway of servers and clients
OUT_IP=203.0.113.100 # the outside host, on the router
PORT=5001
make_pki "$PKI"

# fullnat_conntrackd_conf I: conntrackd.conf of server I: the example with
# the server's address on the sync link and its own lock, socket and log
# (two daemons on one machine); Systemd off (no systemd here). Fails,
# saying which, if the example no longer has a line substituted.
fullnat_conntrackd_conf() {
	local i=$1 d out want
	d=$(ha_dir "$i")
	out=$(sed -E \
		-e "s|^(\t\tIPv4_interface) 192\.168\.100\.1\$|\1 192.168.100.$i|" \
		-e "s|^(\tLogFile) /var/log/conntrackd\.log\$|\1 $d/conntrackd.log|" \
		-e "s|^(\tLockFile) /var/lock/conntrackd\.lock\$|\1 $d/conntrackd.lock|" \
		-e "s|^(\t\tPath) /var/run/conntrackd\.ctl\$|\1 $d/conntrackd.ctl|" \
		-e "s|^(\tSystemd) on\$|\1 off|" \
		"$EX/conntrackd.conf") || return 1
	for want in "IPv4_interface 192.168.100.$i" "LogFile $d/conntrackd.log" \
		"LockFile $d/conntrackd.lock" "Path $d/conntrackd.ctl" "Systemd off"; do
		grep -qF "$want" <<<"$out" || {
			say "fullnat: $EX/conntrackd.conf changed: no line to turn into \"$want\" (fix regress/fullnat.sh)"
			return 1
		}
	done
	printf '%s\n' "$out"
}

# ctd I ARGS...: a request to server I's conntrackd.
ctd() { local i=$1; shift; ip netns exec "$LAB-s$i" conntrackd -C "$(ha_dir "$i")/conntrackd.conf" "$@"; }

# fullnat_up CONNTRACKD: the lab: lab_topology (2 servers, 1 client), the
# outside router on the public network, a sync link (bridge br-sync, eth2,
# 192.168.100.I), on every server the example ruleset and, if CONNTRACKD
# is 1, conntrackd (started before keepalived, as at boot), then vpnsyncd
# (pushing redirect-gateway def1) and keepalived with the example's notify
# lines uncommented. Returns once one server holds both VIPs.
fullnat_up() {
	local with=$1 i d
	HA_SERVERS=2
	HA_CLIENTS=1
	HA_ADVERT=1
	lab_topology 2 1
	lab_netns "$LAB-out"
	lab_link "$LAB-out" br-pub eth0 "$ROUTER/24"
	ip -n "$LAB-out" addr add "$OUT_IP/32" dev lo
	ip netns exec "$LAB-out" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
		net.ipv4.conf.eth0.send_redirects=0
	ip -n "$LAB-c1" route add default via "$ROUTER"
	ip -n "$LAB-sw" link add br-sync type bridge
	ip -n "$LAB-sw" link set br-sync up
	for i in 1 2; do
		d=$(ha_dir "$i")
		mkdir -p "$d"
		lab_link "$LAB-s$i" br-sync eth2 "192.168.100.$i/24"
		ip -n "$LAB-s$i" route add default via "$ROUTER"
		ip netns exec "$LAB-s$i" nft -f "$EX/nftables-fullnat.nft" || { say "fullnat: nft -f failed on s$i"; return 1; }
		fullnat_conntrackd_conf "$i" >"$d/conntrackd.conf" || return 1
		[ "$with" = 1 ] || continue
		ip netns exec "$LAB-s$i" conntrackd -C "$d/conntrackd.conf" >"$d/conntrackd.out" 2>&1 &
		LAB_PIDS+=("$!")
		disown $!
		wait_for 5 ctd "$i" -s >/dev/null ||
			{ say "fullnat: conntrackd of s$i does not answer:"; tail -5 "$d/conntrackd.out" "$d/conntrackd.log" >&2; return 1; }
	done
	for i in 1 2; do
		HA_CONF_EXTRA="push redirect-gateway def1" start_vpnsyncd "$i" || return 1
	done
	for i in 1 2; do
		d=$(ha_dir "$i")
		HA_KEEPALIVED_SED="s|^\t#(notify_[a-z]+) \"/usr/local/sbin/vpnsyncd-conntrackd ([a-z]+)\"\$|\t\1 \"$EX/conntrackd-notify.sh \2 $d/conntrackd.conf\"|" \
			start_keepalived "$i" || return 1
		grep -qF "notify_master \"$EX/conntrackd-notify.sh primary $d/conntrackd.conf\"" "$d/keepalived.conf" ||
			{ say "fullnat: etc/examples/keepalived.conf has no #notify_master line to uncomment"; return 1; }
	done
	wait_for 20 ha_settled || { say "fullnat: no server holds both VIPs after 20 s"; return 1; }
	say "fullnat: 2 servers, conntrackd $([ "$with" = 1 ] && echo on || echo off), master s$(master_of)"
}

# received LOG: the total the receiver logged last (0 before any byte).
received() { awk '$1 == "progress" { n = $3 } END { print n + 0 }' "$1"; }
received_over() { [ "$(received "$1")" -gt "$2" ]; }
# longest_stall LOG T: the longest time in seconds between two progress
# lines of LOG after the Unix time T (the outage the stream saw).
longest_stall() {
	awk -v since="$2" '$1 == "progress" && $2 > since - 1 {
		if (have && $2 - prev > gap) gap = $2 - prev
		prev = $2; have = 1
	} END { printf "%.2f\n", gap }' "$1"
}
# openvpn_not_synced I: server I's conntrackd answers and its external
# cache has no entry of the OpenVPN clients' UDP to port 1194.
openvpn_not_synced() {
	local out
	out=$(ctd "$1" -e 2>/dev/null) || return 1
	! grep -q "udp .*dport=1194 " <<<"$out"
}
no_failure() { ! grep -Eq '^(error|corrupt|eof)' "$1"; }
# in_cache I WHICH PORT: conntrackd of server I has a TCP entry of the
# client's network to the outside host's PORT in its cache WHICH (-i
# internal, -e external).
in_cache() { ctd "$1" "$2" 2>/dev/null | grep -E "tcp .*src=10\.8\.0\.[0-9]+ dst=$OUT_IP sport=[0-9]+ dport=$3 " | grep -q "ESTABLISHED"; }
def1_route() { ip -n "$LAB-c1" -4 route show 0.0.0.0/1 | grep -q "dev tun0"; }
ping_outside() { ip netns exec "$LAB-c1" ping -c "${1:-3}" -i 0.2 -W 1 "$OUT_IP" >/dev/null 2>&1; }
master_is() { [ "$(master_of)" = "$1" ] && ha_settled; }

# fullnat_case LABEL CONNTRACKD: the lab, the client, the stream, the power
# cut of the master, and what the stream did.
fullnat_case() {
	local label=$1 with=$2 slog=$LAB_TMP/stream-server.log rlog=$LAB_TMP/stream-client.log
	local peer b0 t_cut stall
	fullnat_up "$with" || { not_ok "$label: lab up"; ha_explain; return 1; }
	ha_start_client 1 alice
	check "$label: the client connects through the VIP" wait_for 20 ha_connected 1 || { ha_explain; return 1; }
	check "$label: the client's traffic goes through the tunnel (redirect-gateway def1: 0.0.0.0/1 dev tun0)" \
		wait_for 5 def1_route
	check "$label: the client reaches the outside host $OUT_IP through the tunnel and NAT" ping_outside
	: >"$slog"
	: >"$rlog"
	ip netns exec "$LAB-out" python3 "$STREAM" serve "$OUT_IP" "$PORT" "$slog" &
	LAB_PIDS+=("$!")
	disown $!
	wait_for 5 bash -c "ip netns exec '$LAB-out' ss -Hltn 'sport = :$PORT' | grep -q ."
	ip netns exec "$LAB-c1" python3 "$STREAM" recv "$OUT_IP" "$PORT" "$rlog" &
	LAB_PIDS+=("$!")
	disown $!
	check "$label: the client's TCP connection to $OUT_IP:$PORT opens" wait_for 10 grep -q "^peer " "$slog" ||
		{ cat "$rlog" >&2; return 1; }
	peer=$(awk '$1 == "peer" { print $2 }' "$slog")
	check "$label: the outside host sees the public VIP $PUB_VIP as its source (SNAT to the shared address; saw $peer)" \
		test "$peer" = "$PUB_VIP"
	check "$label: 256 KiB reach the client before the failover" wait_for 5 received_over "$rlog" 262144
	if [ "$with" = 1 ]; then
		check "$label: conntrackd of the backup s2 holds the connection in its external cache" \
			wait_for 5 in_cache 2 -e "$PORT"
		# The example's Address Ignore list: the members' own traffic
		# (here the OpenVPN client's UDP to the VIP) is not synced.
		check "$label: ... and not the OpenVPN client's UDP to the VIP (the example's Address Ignore list)" \
			openvpn_not_synced 2
	fi
	check "$label: s1 is master" master_is 1 || return 1
	# The master loses power: its sync link too, then the others (power_cut).
	ip -n "$LAB-sw" link set s1-eth2 down
	power_cut 1
	t_cut=$POWER_CUT_AT
	say "$label: power cut of the master s1 after $(received "$rlog") bytes"
	check "$label: s2 takes both VIPs over" wait_for 15 master_is 2 || { ha_explain; return 1; }
	say "$label: s2 is master after $(awk -v a="$t_cut" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
	check "$label: s2 promoted the client's ghost session" \
		wait_for 5 grep -Eq "promoted: [1-9][0-9]* ghost session" "$(ha_log 2)"
	sleep 0.5
	b0=$(received "$rlog")
	if [ "$with" = 1 ]; then
		check "$label: keepalived's notify_master ran conntrackd -c on s2 (\"Committed N new entries\")" \
			wait_for 5 grep -Eq "Committed [1-9][0-9]* new entries" "$(ha_dir 2)/conntrackd.log"
		check "$label: the new master's kernel holds the synced entry (conntrackd -i after -R)" \
			wait_for 5 in_cache 2 -i "$PORT"
		check "$label: the same TCP connection goes on through the new master: 1 MiB more within 20 s" \
			wait_for 20 received_over "$rlog" $((b0 + 1048576))
		stall=$(longest_stall "$rlog" "$t_cut")
		say "$label: the stream stalled for $stall s across the failover; $(received "$rlog") bytes in all"
		check "$label: no RST, no end, every byte in order at the client ($(tail -1 "$rlog"))" no_failure "$rlog"
		check "$label: no error at the outside host ($(tail -1 "$slog"))" no_failure "$slog"
	else
		check "$label: without conntrackd the tunnel survives: a new ping through NAT answers" ping_outside 5
		sleep 12
		say "$label: $(($(received "$rlog") - b0)) bytes reached the client in the 12 s after the takeover; outside host: $(tail -1 "$slog")"
		check "$label: without conntrackd the open connection does not go on (no byte in the 12 s after the takeover)" \
			test "$(received "$rlog")" -eq "$b0"
	fi
	if client_restarted 1; then
		not_ok "$label: the client did not restart"
		client_trouble 1 | sed 's/^/    /' >&2
	else
		ok "$label: the client did not restart"
	fi
}

for c in $CASES; do
	case $c in
	1) fullnat_case "1 (conntrackd)" 1 ;;
	2) fullnat_case "2 (control, no conntrackd)" 0 ;;
	*) not_ok "unknown case $c" ;;
	esac
	[ -z "${LAB_KEEP:-}" ] || cp -a "$LAB_TMP" "$LAB_KEEP.case-$c"
	ha_teardown
done
summary
