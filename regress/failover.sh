#!/usr/bin/env bash
# Failover of live sessions in the HA lab: three servers running vpnsyncd
# under keepalived (VRRP), stock OpenVPN 2.6 clients, the inside host.
# Every case checks, for every client: no restart (no SIGUSR1, no "Restart
# pause", no second "Initialization Sequence Completed"), no "replay" or
# "bad packet ID" warning, the same tunnel IP, traffic to the inside host.
#
#   1  one client, master power-cut, a backup takes over   (1k: kill -9)
#   2  two failures in a row
#   3  two clients, both continue
#   4  10 Hz ping through the failover: outage - VIP move <= 0.2 s (4k: kill -9)
#   5  a TCP stream across the failover, every byte intact (sha256)
#   6  the failed server comes back, gets the bulk, takes over again
#   7  30 % loss on the sync traffic, then failover
#   8  sync security: wrong key, replay, truncated datagrams; no plaintext
#   9  a forged DATA_V2 with the ghost's peer id at a backup: no promotion
#  10  a takeover, then 20 renegotiations (reneg-sec 3): no reconnect
#  11  the master's whole vpnsyncd hangs (SIGSTOP): the VIP moves within the
#      watchdog time plus the VIP move; continued, the daemon goes down
#  12  the master renegotiates with its sync cut, then fails: the client is a
#      key ahead of every copy, and is caught up at once
#
# Every case also captures (tcpdump in the client namespaces) what the
# servers send to each client and checks that no (key, packet id) pair
# arrives twice (regress/pcap.py ids; AEAD ciphers only, whose packet id is
# in clear). And the lab's keepalived.conf is etc/examples/keepalived.conf.
#
# FAILOVER_CASES="1 4k 8" runs a subset.
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived tcpdump iperf3 python3

CASES=${FAILOVER_CASES:-1 1k 2 3 4 4k 5 6 7 8 9 10 11 12}
PCAP=$REGRESS_DIR/pcap.py
make_pki "$PKI"
# The packet-id checker must be able to fail: on a synthetic capture with
# one (key, packet id) sent twice it must say so, and not on the same
# capture without it.
check "packet-id checker: finds the repeat in a synthetic capture, and only there" python3 "$PCAP" selftest

# --- helpers of this file -------------------------------------------------

ping_inside() { ip netns exec "$LAB-c$1" ping -c "${2:-3}" -i 0.2 -W 1 "$INSIDE_IP" >/dev/null 2>&1; }
not_restarted() { ! client_restarted "$1"; }
same_ip() { [ -n "$2" ] && [ "$(tunnel_ip "$1")" = "$2" ]; }
has_line() { grep -Eq "$2" "$1"; }
master_is() { [ "$(master_of)" = "$1" ]; }
master_is_not() { local m; m=$(master_of); [ -n "$m" ] && [ "$m" != "$1" ] && [ "${m#* }" = "$m" ]; }

# taken_over OLD: another server holds both VIPs, alone (the same answer
# before and after ha_settled, which reads the servers one by one).
taken_over() {
	local m
	m=$(master_of)
	[ -n "$m" ] && [ "$m" != "$1" ] && ha_settled && [ "$(master_of)" = "$m" ]
}

declare -A IP0
# clients_up LABEL N: clients 1..N (alice, bob) connect through the VIP.
clients_up() {
	local label=$1 n=$2 k names=(x alice bob)
	for k in $(seq 1 "$n"); do ha_start_client "$k" "${names[$k]}"; done
	for k in $(seq 1 "$n"); do
		check "$label: client $k (${names[$k]}) connects through the VIP" wait_for 20 ha_connected "$k"
		IP0[$k]=$(tunnel_ip "$k")
		check "$label: client $k reaches the inside host (tunnel IP ${IP0[$k]})" ping_inside "$k"
	done
}

# ghosts_on_backups LABEL NAME: every backup installed NAME's session.
ghosts_on_backups() {
	local label=$1 name=$2 i m
	m=$(master_of)
	for i in $(seq 1 "$HA_SERVERS"); do
		[ "$i" = "$m" ] && continue
		check "$label: backup s$i holds $name's session (\"ghost $name ... installed\")" \
			wait_for 5 has_line "$(ha_log "$i")" "ghost $name .*installed"
	done
}

# fail LABEL HOW: the master fails (HOW: cut or kill); a backup takes over.
# Sets OLD, NEW, T_FAIL, TOOK (seconds until the VIPs were seen moved).
fail() {
	local label=$1 how=$2
	OLD=$(master_of)
	T_FAIL=$EPOCHREALTIME
	if [ "$how" = kill ]; then
		kill_vpnsyncd "$OLD"
		say "$label: kill -9 of vpnsyncd on the master s$OLD"
	else
		power_cut "$OLD"
		say "$label: power cut of the master s$OLD"
	fi
	check "$label: a backup takes both VIPs over from s$OLD" wait_for 15 taken_over "$OLD" ||
		ha_explain
	NEW=$(master_of)
	TOOK=$(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
	say "$label: s$NEW is master after $TOOK s"
	check "$label: s$NEW promoted the ghost sessions (\"promoted: N ghost session(s) now live\")" \
		wait_for 5 has_line "$(ha_log "$NEW")" "promoted: [1-9][0-9]* ghost session"
}

# continued LABEL N [PINGLOG]: client N went on through the failover.
continued() {
	local label=$1 k=$2 log=${3:-}
	if [ -n "$log" ]; then
		check "$label: client $k's ping through the tunnel answers again after the failover" \
			wait_for 20 replied_since "$log" "$T_FAIL"
	fi
	check "$label: client $k reaches the inside host after the failover" ping_inside "$k" 5
	if client_restarted "$k"; then
		not_ok "$label: client $k did not restart nor warn (replay, bad packet ID)"
		client_trouble "$k" | sed 's/^/    /' >&2
	else
		ok "$label: client $k did not restart nor warn (replay, bad packet ID)"
	fi
	check "$label: client $k keeps its tunnel IP ${IP0[$k]} (now $(tunnel_ip "$k"))" same_ip "$k" "${IP0[$k]}"
}

# --- capture of what the servers send to the clients ---------------------
# Every case's clients are captured (tcpdump in their namespace, udp port
# 1194, both directions) from before they connect to the end of the case;
# case_end checks that no (key, packet id) pair reached a client twice.

declare -A CAP_PID
# lab_up LABEL SERVERS CLIENTS: the HA lab, and the capture in every client.
lab_up() {
	local label=$1 k
	ha_lab "$2" "$3" || { not_ok "$label: lab up"; return 1; }
	for k in $(seq 1 "$HA_CLIENTS"); do
		ip netns exec "$LAB-c$k" timeout 600 tcpdump -i eth0 -U -n -s 96 -w "$LAB_TMP/c$k.pcap" \
			udp port 1194 2>"$LAB_TMP/c$k.tcpdump" &
		CAP_PID[$k]=$!
		LAB_PIDS+=("$!")
	done
	for k in $(seq 1 "$HA_CLIENTS"); do
		wait_for 5 grep -q "listening on" "$LAB_TMP/c$k.tcpdump" ||
			{ not_ok "$label: tcpdump in client $k: $(cat "$LAB_TMP/c$k.tcpdump")"; return 1; }
	done
}

# server_macs: MAC=sI for every server's eth0 (pcap.py names senders).
server_macs() {
	local i
	for i in $(seq 1 "$HA_SERVERS"); do
		printf '%s=s%s\n' "$(ip -n "$LAB-s$i" link show eth0 | awk '/link\/ether/ { print $2 }')" "$i"
	done
}

# captures_stop: tcpdump ends, its files complete.
captures_stop() {
	local k
	for k in "${!CAP_PID[@]}"; do
		kill "${CAP_PID[$k]}" 2>/dev/null
		wait "${CAP_PID[$k]}" 2>/dev/null
	done
	CAP_PID=()
}

# ids_checked LABEL: no client received a (key, packet id) pair twice. Only
# AEAD sessions can be checked (with CBC the packet id is encrypted): a
# client with another cipher is reported as not checked.
ids_checked() {
	local label=$1 k cipher out rc macs
	mapfile -t macs < <(server_macs)
	for k in $(seq 1 "$HA_CLIENTS"); do
		cipher=$(grep -o "Data Channel: cipher '[^']*'" "$LAB_TMP/c$k.log" | tail -1 | cut -d"'" -f2)
		case $cipher in
		*GCM* | *CHACHA20*) ;;
		*)
			say "$label: client $k: packet ids NOT checked: cipher '${cipher:-none}' is not AEAD (its packet id is encrypted)"
			continue
			;;
		esac
		out=$(python3 "$PCAP" ids "$LAB_TMP/c$k.pcap" "${macs[@]}")
		rc=$?
		grep '^REPEAT' <<<"$out" | sed 's/^/    /' >&2
		out=$(tail -1 <<<"$out")
		say "$label: client $k ($cipher): $out"
		check "$label: client $k received no (key, packet id) pair twice (${out%% data*} data packets)" \
			test "$rc" = 0 -a "${out%% *}" -gt 0
	done
}

# case_end LABEL: the packet-id check of the case, then the lab goes
# (LAB_KEEP=DIR keeps each case's files in DIR.case-LABEL).
case_end() {
	captures_stop
	ids_checked "$1"
	[ -z "${LAB_KEEP:-}" ] || cp -a "$LAB_TMP" "$LAB_KEEP.case-${1%% *}"
	ha_teardown
}

# --- the cases -------------------------------------------------------------

# one_client_up LABEL: the HA lab with client alice connected and synced to
# the backups, and a 10 Hz ping through the tunnel in $LAB_TMP/ping-c1.
one_client_up() {
	lab_up "$1" 3 1 || return 1
	clients_up "$1" 1
	ghosts_on_backups "$1" alice
	ping_log "$LAB-c1" "$INSIDE_IP" "$LAB_TMP/ping-c1"
	sleep 2
}

# 1: one client, the master fails, a backup takes over.
case_one() {
	local label=$1 how=$2
	one_client_up "$label" || return
	fail "$label" "$how"
	continued "$label" 1 "$LAB_TMP/ping-c1"
	say "$label: longest gap through the tunnel $(longest_gap "$LAB_TMP/ping-c1") s"
	case_end "$label"
}

# 2: the master fails, then the new master fails too.
case_two_failures() {
	local label=2
	one_client_up "$label" || return
	fail "$label (first failure)" cut
	continued "$label (first failure)" 1 "$LAB_TMP/ping-c1"
	sleep 2
	fail "$label (second failure)" cut
	continued "$label (second failure)" 1 "$LAB_TMP/ping-c1"
	say "$label: longest gap through the tunnel $(longest_gap "$LAB_TMP/ping-c1") s"
	case_end "$label"
}

# 3: two clients, both continue.
case_two_clients() {
	local label=3
	lab_up "$label" 3 2 || return
	clients_up "$label" 2
	ghosts_on_backups "$label" alice
	ghosts_on_backups "$label" bob
	check "$label: distinct tunnel IPs (${IP0[1]}, ${IP0[2]})" test "${IP0[1]}" != "${IP0[2]}"
	ping_log "$LAB-c1" "$INSIDE_IP" "$LAB_TMP/ping-c1"
	ping_log "$LAB-c2" "$INSIDE_IP" "$LAB_TMP/ping-c2"
	sleep 2
	fail "$label" cut
	continued "$label" 1 "$LAB_TMP/ping-c1"
	continued "$label" 2 "$LAB_TMP/ping-c2"
	check "$label: the new master lists both clients" \
		test "$(ha_ctl "$NEW" show clients 2>/dev/null | awk 'NR > 1' | wc -l)" -eq 2
	case_end "$label"
}

# 4: outage through the tunnel versus the VIP move, one run.
case_outage() {
	local label=$1 how=$2 out vip
	lab_up "$label" 3 1 || return
	clients_up "$label" 1
	ghosts_on_backups "$label" alice
	ping_log "$LAB-c1" "$INSIDE_IP" "$LAB_TMP/ping-tun"
	local p1=$PING_PID
	ping_log "$LAB-c1" "$PUB_VIP" "$LAB_TMP/ping-vip"
	local p2=$PING_PID
	sleep 3
	fail "$label" "$how"
	wait_for 20 replied_since "$LAB_TMP/ping-tun" "$T_FAIL" 10
	sleep 3
	kill "$p1" "$p2" 2>/dev/null
	out=$(longest_gap "$LAB_TMP/ping-tun")
	vip=$(longest_gap "$LAB_TMP/ping-vip")
	say "$label: outage through the tunnel $out s, VIP move $vip s (10 Hz pings from c1)"
	check "$label: outage - VIP move <= 0.2 s ($out - $vip)" \
		awk -v o="$out" -v v="$vip" 'BEGIN { exit !(o - v <= 0.2) }'
	check "$label: the VIP did move (gap $vip s > 0)" awk -v v="$vip" 'BEGIN { exit !(v > 0.15 && v < 99) }'
	continued "$label" 1
	case_end "$label"
}

# 5: a TCP stream from the client to the inside host across the failover.
cat >"$LAB_TMP/stream.py" <<'PY'
import hashlib, os, socket, sys, time
mode, addr, port, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(1); s.settimeout(60)
    c, _ = s.accept(); c.settimeout(60)
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(65536)
        if not b: break
        h.update(b); n += len(b)
    open(out, "w").write(f"{n} {h.hexdigest()}\n")
else:
    total, rate = int(sys.argv[5]), int(sys.argv[6])   # bytes, bytes/s
    c = socket.create_connection((addr, port), timeout=10); c.settimeout(60)
    h, n, t0, chunk = hashlib.sha256(), 0, time.time(), 16384
    while n < total:
        b = os.urandom(min(chunk, total - n))
        c.sendall(b); h.update(b); n += len(b)
        ahead = n / rate - (time.time() - t0)
        if ahead > 0: time.sleep(ahead)
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
    open(out, "w").write(f"{n} {h.hexdigest()} {t0:.6f} {time.time():.6f}\n")
PY

case_stream() {
	local label=5 bytes=$((6 * 1024 * 1024)) rate=$((400 * 1024)) sp cp sent recv
	lab_up "$label" 3 1 || return
	clients_up "$label" 1
	ghosts_on_backups "$label" alice
	ip netns exec "$LAB-in" timeout 90 python3 "$LAB_TMP/stream.py" server "$INSIDE_IP" 5001 "$LAB_TMP/recv" &
	sp=$!
	sleep 0.5
	# ~15 s of stream at 400 KiB/s; the master fails 5 s into it.
	ip netns exec "$LAB-c1" timeout 90 python3 "$LAB_TMP/stream.py" client "$INSIDE_IP" 5001 "$LAB_TMP/sent" "$bytes" "$rate" &
	cp=$!
	sleep 5
	fail "$label" cut
	wait "$cp"
	wait "$sp"
	sent=$(cat "$LAB_TMP/sent" 2>/dev/null)
	recv=$(cat "$LAB_TMP/recv" 2>/dev/null)
	say "$label: sent: ${sent:-nothing}"
	say "$label: received: ${recv:-nothing}"
	check "$label: the stream ended after the failover (it spanned it)" \
		awk -v t="$T_FAIL" -v e="$(awk '{print $4}' <<<"$sent")" -v s="$(awk '{print $3}' <<<"$sent")" 'BEGIN { exit !(s < t && e > t) }'
	check "$label: every byte arrived intact ($bytes bytes, sha256)" \
		test -n "$sent" -a "$(awk '{print $1, $2}' <<<"$sent")" = "$bytes $(awk '{print $2}' <<<"$recv")" -a "$(awk '{print $1}' <<<"$recv")" = "$bytes"
	continued "$label" 1
	case_end "$label"
}

# 6: the failed server comes back, gets the bulk, takes over again.
case_rejoin() {
	local label=6 early=0 deadline n
	one_client_up "$label" || return
	fail "$label" cut
	continued "$label (s$OLD failed)" 1 "$LAB_TMP/ping-c1"
	local back=$OLD holder=$NEW
	power_on "$back"
	say "$label: s$back powered on"
	# Until its table is complete it must stay demoted: the VIP stays put.
	deadline=$((SECONDS + 20))
	while [ $SECONDS -lt $deadline ]; do
		has_line "$(ha_log "$back")" "session table complete" && break
		[ "$(master_of)" = "$back" ] && early=1
		sleep 0.1
	done
	check "$label: s$back logs \"session table complete\"" has_line "$(ha_log "$back")" "session table complete"
	say "$label: $(grep -m1 "session table complete: [0-9]" "$(ha_log "$back")")"
	n=$(grep -m1 "session table complete: [0-9]" "$(ha_log "$back")" | sed -E 's/.*session table complete: *([0-9]+).*/\1/')
	check "$label: its table is complete with 1 session (\"session table complete: ${n:-?} ...\")" test "${n:-x}" = 1
	check "$label: s$back booted demoted: keepalived's init_file wrote $HA_DEMOTE before vpnsyncd ran (read: ${POWER_ON_DEMOTE:-nothing})" \
		test "${POWER_ON_DEMOTE:-}" = "$HA_DEMOTE"
	check "$label: s$back did not take the VIP before its table was complete" test $early = 0
	check "$label: show sync on s$back: 1 session, bulk complete" \
		test "$(sync_field "$back" sessions) $(sync_field "$back" bulk_complete)" = "1 true"
	say "$(ha_ctl "$back" show sync 2>&1 | sed 's/^/    /')"
	check "$label: s$back holds alice's session (ghost installed)" has_line "$(ha_log "$back")" "ghost alice .*installed"
	# Preemption is on: with the highest priority it takes the VIPs back
	# once its demotion is lifted.
	T_FAIL=$EPOCHREALTIME
	check "$label: s$back takes over again (preempts s$holder)" wait_for 15 master_is "$back"
	check "$label: s$back promoted the ghost session" wait_for 5 has_line "$(ha_log "$back")" "promoted: [1-9][0-9]* ghost session"
	continued "$label (s$back back as master)" 1 "$LAB_TMP/ping-c1"
	case_end "$label"
}

# sync_loss PCT [I...]: PCT % loss on the sync traffic (UDP port 1196
# only, so that the inside traffic on the same eth1 is not touched), on the
# egress of servers I... (every server by default). With tc netem and a u32
# filter where the kernel has them; else nftables (numgen) or iptables
# (statistic) on the OUTPUT hook, which sees every sync datagram a server
# sends. Sets LOSS_HOW.
sync_loss() {
	local pct=$1 i ns servers
	shift
	servers=${*:-$(seq 1 "$HA_SERVERS")}
	LOSS_HOW=""
	for i in $servers; do
		ns="ip netns exec $LAB-s$i"
		if $ns tc qdisc add dev eth1 root handle 1: prio bands 3 priomap 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2>/dev/null &&
			$ns tc qdisc add dev eth1 parent 1:3 handle 30: netem loss "$pct%" 2>/dev/null &&
			$ns tc filter add dev eth1 parent 1: protocol ip prio 1 u32 \
				match ip protocol 17 0xff match ip dport 1196 0xffff flowid 1:3 2>/dev/null; then
			LOSS_HOW="tc netem loss $pct% + u32 filter udp dport 1196"
		elif command -v nft >/dev/null &&
			$ns nft add table ip vslab &&
			$ns nft add chain ip vslab out '{ type filter hook output priority 0; }' &&
			$ns nft add rule ip vslab out oifname eth1 udp dport 1196 numgen random mod 100 le $((pct - 1)) counter drop; then
			LOSS_HOW="nft: oifname eth1 udp dport 1196 numgen random mod 100 le $((pct - 1)) drop"
		elif command -v iptables >/dev/null &&
			$ns iptables -A OUTPUT -o eth1 -p udp --dport 1196 -m statistic --mode random \
				--probability "$(awk -v p="$pct" 'BEGIN { print p / 100 }')" -j DROP; then
			LOSS_HOW="iptables -m statistic --probability $pct/100 on udp dport 1196"
		else
			$ns tc qdisc del dev eth1 root 2>/dev/null
			LOSS_HOW=""
			return 1
		fi
	done
}
# loss_stats I: what the loss emulation on server I dropped.
loss_stats() {
	local ns="ip netns exec $LAB-s$1"
	case $LOSS_HOW in
	tc*) $ns tc -s qdisc show dev eth1 | awk '/netem/ { getline; print }' ;;
	nft*) $ns nft list chain ip vslab out | grep -o 'counter.*' ;;
	iptables*) $ns iptables -vnL OUTPUT | awk '/statistic/ { print $1 " packets dropped" }' ;;
	esac
}
# 7: 30 % loss on the sync traffic of every server, during traffic, then
# failover.
case_sync_loss() {
	local label=7 ip1 loss
	lab_up "$label" 3 1 || return
	if ! sync_loss 30; then
		not_ok "$label: 30 % loss on the sync traffic (this kernel has no netem qdisc or u32 classifier, and neither nft nor iptables is installed)"
		ha_teardown
		return
	fi
	say "$label: loss emulation: $LOSS_HOW"
	clients_up "$label" 1
	ping_log "$LAB-c1" "$INSIDE_IP" "$LAB_TMP/ping-c1"
	ip netns exec "$LAB-in" timeout 30 iperf3 -s -1 >/dev/null 2>&1 &
	sleep 0.3
	ip netns exec "$LAB-c1" timeout 30 iperf3 -c "$INSIDE_IP" -u -b 2M -l 200 -t 10 >"$LAB_TMP/iperf" 2>&1 &
	sleep 6
	loss=$(awk '/ bytes from /{r++} /no answer/{n++} END {print n + 0}' "$LAB_TMP/ping-c1")
	check "$label: the netem filter leaves the inside traffic alone (no ping lost before the failover: $loss)" test "$loss" -eq 0
	fail "$label" cut
	continued "$label" 1 "$LAB_TMP/ping-c1"
	for i in $(seq 1 "$HA_SERVERS"); do
		say "$label: s$i: loss emulation: $(loss_stats "$i")"
	done
	check "$label: no replay warning at the client" bash -c "! grep -Eqi 'replay|bad packet ID' '$LAB_TMP/c1.log'"
	case_end "$label"
}

# 8: sync security.

case_security() {
	local label=8 m b cap=$LAB_TMP/sync.pcap tp a0 r0 m0 a1 r1 m1 cip n
	lab_up "$label" 3 1 || return
	m=$(master_of)
	b=$((m % 3 + 1))
	ip netns exec "$LAB-s$b" timeout 60 tcpdump -i eth1 -U -n -s 0 -w "$cap" udp port 1196 2>/dev/null &
	tp=$!
	sleep 1
	clients_up "$label" 1
	ghosts_on_backups "$label" alice
	ip netns exec "$LAB-c1" ping -c 20 -i 0.1 -W 1 "$INSIDE_IP" >/dev/null
	sleep 2
	kill "$tp"
	wait "$tp" 2>/dev/null
	n=$(python3 "$PCAP" count "$cap")
	check "$label: sync datagrams were captured on the sync link ($n)" test "${n:-0}" -gt 0
	cip=$(printf '%02x' $(tr . ' ' <<<"${IP0[1]:-0.0.0.0}"))
	check "$label: no sync datagram shows the client's name \"alice\" in plaintext" \
		bash -c "! python3 '$PCAP' find '$cap' $(printf alice | od -An -tx1 | tr -d ' \n')"
	check "$label: no sync datagram shows the tunnel IP ${IP0[1]} ($cip) or the client's address in plaintext" \
		bash -c "! python3 '$PCAP' find '$cap' $cip c6120065"
	check "$label: no sync datagram shows the CA's name in plaintext" \
		bash -c "! python3 '$PCAP' find '$cap' $(printf 'vpnsyncd lab CA' | od -An -tx1 | tr -d ' \n')"
	a0=$(sync_field "$b" rejected.auth)
	r0=$(sync_field "$b" rejected.replay)
	m0=$(sync_field "$b" rejected.malformed)
	say "$label: s$b before: rejected auth ${a0:-?}, replay ${r0:-?}, malformed ${m0:-?}"
	# From the master's own namespace, with its own addresses and ports.
	ip netns exec "$LAB-s$m" python3 "$PCAP" inject "$cap" "198.19.0.1$m" replay "198.19.0.1$m" >&2
	ip netns exec "$LAB-s$m" python3 "$PCAP" inject "$cap" "198.19.0.1$m" flip "198.19.0.1$m" >&2
	ip netns exec "$LAB-s$m" python3 "$PCAP" inject "$cap" "198.19.0.1$m" truncate "198.19.0.1$m" >&2
	# A member of another cluster (another sync key) on the sync link.
	lab_netns "$LAB-s4"
	lab_link "$LAB-s4" br-pub eth0 198.18.0.14/24
	lab_link "$LAB-s4" br-in eth1 198.19.0.14/24
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$LAB_TMP/wrong-sync.key"
	chmod 600 "$LAB_TMP/wrong-sync.key"
	ip netns exec "$LAB-s4" sysctl -qw net.ipv4.ip_nonlocal_bind=1
	start_vpnsyncd 4 "$LAB_TMP/wrong-sync.key"
	sleep 3
	a1=$(sync_field "$b" rejected.auth)
	r1=$(sync_field "$b" rejected.replay)
	m1=$(sync_field "$b" rejected.malformed)
	say "$label: s$b after:  rejected auth ${a1:-?}, replay ${r1:-?}, malformed ${m1:-?}"
	say "$(ha_ctl "$b" show sync 2>&1 | sed 's/^/    /')"
	check "$label: wrong-key and forged datagrams counted as bad auth (${a0:-?} -> ${a1:-?})" \
		test "${a1:-0}" -ge $((${a0:-0} + 2))
	check "$label: the replayed datagram counted as replay (${r0:-?} -> ${r1:-?})" test "${r1:-0}" -gt "${r0:-0}"
	check "$label: the truncated datagram counted as malformed (${m0:-?} -> ${m1:-?})" test "${m1:-0}" -gt "${m0:-0}"
	check "$label: s$b still holds 1 session" test "$(sync_field "$b" sessions)" = 1
	check "$label: the foreign member installed no session" bash -c "! grep -q 'ghost' '$(ha_log 4)'"
	check "$label: the client still reaches the inside host" ping_inside 1
	check "$label: no restart nor warning at the client" not_restarted 1
	case_end "$label"
}

# 9: a forged DATA_V2 datagram carrying the ghost's peer id, junk after the
# header, sent from outside (the client's namespace, another source port)
# to a backup's own address, where every server also listens in this case,
# while the master is alive. Safe: the backup neither promotes the ghost
# nor takes anything over, sends nothing to the client, and the client goes
# on through the master without a replay warning.
cat >"$LAB_TMP/forge.py" <<'PY'
import os, socket, sys
addr, peer_id = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
for i in range(3):
    # P_DATA_V2, key_id 0, the peer id, a high packet id, then junk
    # standing for the AEAD tag and ciphertext.
    pkt = bytes([9 << 3]) + peer_id.to_bytes(3, "big") + (0x7F000000 + i).to_bytes(4, "big") + os.urandom(48)
    s.sendto(pkt, (addr, 1194))
print(f"forged 3 DATA_V2 datagrams (peer-id {peer_id}) from port {s.getsockname()[1]} to {addr} port 1194")
PY

case_forged() {
	local label=9 m b pid t0 n
	HA_LISTEN_OWN=1
	one_client_up "$label"
	local up=$?
	HA_LISTEN_OWN=
	[ $up = 0 ] || return
	m=$(master_of)
	b=$((m % 3 + 1))
	pid=$(grep -m1 -o "new session, peer-id [0-9]*" "$(ha_log "$m")" | awk '{ print $NF }')
	check "$label: the master s$m logged alice's peer-id (\"new session, peer-id ${pid:-?}\")" test -n "$pid"
	t0=$EPOCHREALTIME
	ip netns exec "$LAB-c1" python3 "$LAB_TMP/forge.py" "198.18.0.1$b" "${pid:-0}" >&2
	# Longer than the keepalive interval (2 s): a backup that went live
	# would have pinged the client by then.
	sleep 5
	check "$label: backup s$b did not promote the ghost (no \"promoted\" in its log)" \
		bash -c "! grep -m3 promoted '$(ha_log "$b")' >&2"
	check "$label: backup s$b took nothing over (no \"taken over\" in its log)" \
		bash -c "! grep -m3 'taken over' '$(ha_log "$b")' >&2"
	n=$(python3 "$PCAP" senders "$LAB_TMP/c1.pcap" $(server_macs) | awk -v s="s$b" '$1 == s { print $2 }')
	check "$label: backup s$b sent nothing to the client (capture: ${n:-0} datagrams from s$b)" test "${n:-0}" = 0
	# A backup does not hold the VIP its listener is bound to, so the kernel
	# refuses its sends (ENETUNREACH): only its log shows that it tried.
	check "$label: backup s$b did not even try to send (no \"send to\" error in its log)" \
		bash -c "! grep -m3 'send to ' '$(ha_log "$b")' >&2"
	check "$label: s$m is still the master" master_is "$m"
	check "$label: the client's 10 Hz ping kept being answered through the master (>= 40 replies in 5 s)" \
		replied_since "$LAB_TMP/ping-c1" "$t0" 40
	check "$label: the client reaches the inside host" ping_inside 1 5
	if client_restarted 1; then
		not_ok "$label: the client did not restart nor warn (replay, bad packet ID)"
		client_trouble 1 | sed 's/^/    /' >&2
	else
		ok "$label: the client did not restart nor warn (replay, bad packet ID)"
	fi
	case_end "$label"
}

# 10: a takeover, then 20 renegotiations by the new master (reneg-sec 3,
# rekey-window 2: key_id goes round 1..7 almost three times), with a 10 Hz
# ping all along. Safe: the client never reconnects (no restart, no TLS
# error), keeps its tunnel IP, and the ping never stops for a second.
RENEG_TROUBLE="Restart|SIGUSR1|TLS Error|TLS key negotiation failed|replay|bad packet ID|Inactivity timeout"
# handshakes_since N T: client N's completed TLS handshakes (its "Control
# Channel: TLS..." lines) stamped after the Unix time T.
handshakes_since() {
	awk -v t="$2" '/ Control Channel: TLS/ && $1 + 0 > t { n++ } END { print n + 0 }' "$LAB_TMP/c$1.log"
}
handshakes_at_least() { [ "$(handshakes_since "$1" 0)" -ge "$2" ]; }
case_reneg() {
	local label=10 deadline n=0 t_back
	HA_CONF_EXTRA="reneg-sec 3" HA_SYNC_EXTRA="rekey-window 2"
	one_client_up "$label"
	local up=$?
	HA_CONF_EXTRA="" HA_SYNC_EXTRA=""
	[ $up = 0 ] || return
	# The master renegotiates twice first: the backups then hold a copied
	# primary key and a copied lame duck, whose key_id comes round again.
	wait_for 15 handshakes_at_least 1 3
	check "$label: the master renegotiated twice before the takeover (client handshakes: $(handshakes_since 1 0))" \
		handshakes_at_least 1 3
	sleep 0.5
	fail "$label" cut
	check "$label: the ping through the tunnel answers again after the takeover" \
		wait_for 20 replied_since "$LAB_TMP/ping-c1" "$T_FAIL"
	t_back=$EPOCHREALTIME
	deadline=$((SECONDS + 100))
	while [ $SECONDS -lt $deadline ]; do
		n=$(handshakes_since 1 "$T_FAIL")
		[ "$n" -ge 20 ] && break
		grep -Eq "$RENEG_TROUBLE" "$LAB_TMP/c1.log" && break
		sleep 0.5
	done
	say "$label: $n renegotiations completed at the client since the takeover, in $(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
	check "$label: 20 renegotiations after the takeover ($n)" test "$n" -ge 20
	if grep -Eq "$RENEG_TROUBLE" "$LAB_TMP/c1.log"; then
		not_ok "$label: the client never reconnected (no $RENEG_TROUBLE)"
		grep -Em5 "$RENEG_TROUBLE" "$LAB_TMP/c1.log" | sed 's/^/    /' >&2
	else
		ok "$label: the client never reconnected (no $RENEG_TROUBLE)"
	fi
	check "$label: one \"Initialization Sequence Completed\" at the client" \
		test "$(grep -c "Initialization Sequence Completed" "$LAB_TMP/c1.log")" = 1
	check "$label: the client keeps its tunnel IP ${IP0[1]} (now $(tunnel_ip 1))" same_ip 1 "${IP0[1]}"
	check "$label: the client reaches the inside host" ping_inside 1 5
	# After that ping: an outage that began as the loop ended counts too.
	local gap
	gap=$(longest_gap "$LAB_TMP/ping-c1" "$t_back")
	check "$label: the ping never stopped for 1 s after the takeover (longest gap $gap s)" \
		awk -v g="$gap" 'BEGIN { exit !(g < 1) }'
	case_end "$label"
}

# 11: every process of the master's vpnsyncd is stopped at once (a hang):
# the tun device stays, the demote file is not written and no process of
# the daemon can see the others' silence, so only keepalived's
# track_script (vpnsyncctl -t 1 show summary, from the example) notices.
# The VIP must move within the watchdog time plus the VIP move, and the
# client keep its session. Continued, the daemon finds its heartbeats
# missing past the watchdog time and goes down, demoted.
case_hang() {
	local label=11 wd=3 pids took
	HA_CONF_EXTRA="watchdog $wd"
	one_client_up "$label" || { HA_CONF_EXTRA=""; return; }
	HA_CONF_EXTRA=""
	OLD=$(master_of)
	pids=$(vpnsyncd_pids "$OLD")
	# shellcheck disable=SC2086
	ps -o pid=,ppid=,args= -p "${pids// /,}" | sed "s/^/    s$OLD: /" >&2
	check "$label: the master s$OLD runs a parent and its 3 children ($pids)" test "$(wc -w <<<"$pids")" -eq 4
	check "$label: show summary lists every child's last heartbeat" has_line <(ha_ctl "$OLD" show summary) \
		"^Watchdog: $wd s; last heartbeat: parent [0-9.]+ s ago, engine [0-9.]+ s ago, syncer [0-9.]+ s ago, carpwatch [0-9.]+ s ago$"
	T_FAIL=$EPOCHREALTIME
	# shellcheck disable=SC2086
	kill -STOP $pids
	say "$label: SIGSTOP of every vpnsyncd process on the master s$OLD"
	check "$label: a backup takes both VIPs over from s$OLD" wait_for 15 taken_over "$OLD" || ha_explain
	took=$(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
	NEW=$(master_of)
	say "$label: s$NEW is master after $took s (watchdog $wd s)"
	check "$label: the VIP moved within the watchdog time plus the VIP move ($took s <= $wd + 2 s)" \
		awk -v t="$took" -v w="$wd" 'BEGIN { exit !(t <= w + 2) }'
	check "$label: s$NEW promoted the ghost sessions" \
		wait_for 5 has_line "$(ha_log "$NEW")" "promoted: [1-9][0-9]* ghost session"
	continued "$label" 1 "$LAB_TMP/ping-c1"
	# shellcheck disable=SC2086
	kill -CONT $pids
	check "$label: continued, s$OLD's vpnsyncd sees the missed heartbeats and stops" \
		wait_for 10 has_line "$(ha_log "$OLD")" "(has not answered a heartbeat|no heartbeat from the parent) for"
	# The line may be a child's, which exits first: the parent demotes
	# once it has seen that (its SIGCHLD or the channel's end).
	check "$label: s$OLD is demoted (demote file $HA_DEMOTE)" \
		wait_for 5 file_holds "$(ha_dir "$OLD")/demote" "$HA_DEMOTE"
	check "$label: s$OLD does not take the VIPs back" master_is_not "$OLD"
	say "$label: longest gap through the tunnel $(longest_gap "$LAB_TMP/ping-c1") s"
	case_end "$label"
}

# 12: the master renegotiates while its sync traffic is cut, and dies
# before the new key reaches a backup: the client is a key ahead of every
# copy. The new master must catch up at once (it renegotiates past the
# client's key_id, docs/SYNC.md), not leave the client's data unread
# until its renegotiation times out (60 s) and the client restarts.
case_key_ahead() {
	local label=12 n0 gap
	HA_CONF_EXTRA="reneg-sec 8"
	one_client_up "$label"
	local up=$?
	HA_CONF_EXTRA=""
	[ $up = 0 ] || return
	OLD=$(master_of)
	n0=$(handshakes_since 1 0)
	if ! sync_loss 100 "$OLD"; then
		not_ok "$label: the master's sync traffic cut (no netem, nft or iptables)"
		ha_teardown
		return
	fi
	say "$label: s$OLD's sync traffic cut: $LOSS_HOW"
	check "$label: the master renegotiates with its sync cut (client handshakes $n0 -> more)" \
		wait_for 15 handshakes_at_least 1 $((n0 + 1))
	sleep 1
	fail "$label" cut
	continued "$label" 1 "$LAB_TMP/ping-c1"
	check "$label: s$NEW caught the client up (\"a key ahead of the copied state\")" \
		wait_for 5 has_line "$(ha_log "$NEW")" "a key ahead of the copied state"
	gap=$(longest_gap "$LAB_TMP/ping-c1")
	check "$label: the ping's longest gap is within the VIP move + 2 s ($gap s, VIPs moved after $TOOK s)" \
		awk -v g="$gap" -v t="$TOOK" 'BEGIN { exit !(g <= t + 2) }'
	case_end "$label"
}

T_ALL=$SECONDS
for c in $CASES; do
	t0=$SECONDS
	say "=== case $c"
	case $c in
	1) case_one 1 cut ;;
	1k) case_one "1k (kill -9)" kill ;;
	2) case_two_failures ;;
	3) case_two_clients ;;
	4) case_outage 4 cut ;;
	4k) case_outage "4k (kill -9)" kill ;;
	5) case_stream ;;
	6) case_rejoin ;;
	7) case_sync_loss ;;
	8) case_security ;;
	9) case_forged ;;
	10) case_reneg ;;
	11) case_hang ;;
	12) case_key_ahead ;;
	*) say "unknown case $c" ;;
	esac
	say "=== case $c: $((SECONDS - t0)) s"
done
say "all cases: $((SECONDS - T_ALL)) s"
summary
