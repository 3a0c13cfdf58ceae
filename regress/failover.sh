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
#
# FAILOVER_CASES="1 4k 8" runs a subset.
. "$(dirname "$0")/lib.sh"
need_root
ensure_user
for c in openvpn keepalived tcpdump iperf3 python3; do
	command -v $c >/dev/null || { say "FATAL: $c is not installed (regress/install-deps)"; exit 2; }
done
[ -x "$VPNSYNCD" ] && [ -x "$VPNSYNCCTL" ] || { say "FATAL: build first: cargo build --workspace"; exit 2; }

CASES=${FAILOVER_CASES:-1 1k 2 3 4 4k 5 6 7 8}
make_pki "$PKI"

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
# Sets OLD, NEW, T_FAIL.
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
	say "$label: s$NEW is master after $(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s"
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

# --- the cases -------------------------------------------------------------

# one_client_up LABEL: the HA lab with client alice connected and synced to
# the backups, and a 10 Hz ping through the tunnel in $LAB_TMP/ping-c1.
one_client_up() {
	ha_lab 3 1 || { not_ok "$1: lab up"; return 1; }
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
	ha_teardown
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
	ha_teardown
}

# 3: two clients, both continue.
case_two_clients() {
	local label=3
	ha_lab 3 2 || { not_ok "$label: lab up"; return; }
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
	ha_teardown
}

# 4: outage through the tunnel versus the VIP move, one run.
case_outage() {
	local label=$1 how=$2 out vip
	ha_lab 3 1 || { not_ok "$label: lab up"; return; }
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
	ha_teardown
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
	ha_lab 3 1 || { not_ok "$label: lab up"; return; }
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
	ha_teardown
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
	ha_teardown
}

# 7: 30 % loss on the sync traffic (UDP port 1196 only, so that the inside
# traffic on the same eth1 is not touched), on every server's egress,
# during traffic, then failover. With tc netem and a u32 filter where the
# kernel has them; else nftables (numgen) or iptables (statistic) on the
# OUTPUT hook, which sees every sync datagram a server sends. Sets LOSS_HOW.
netem_sync_loss() {
	local i ns
	LOSS_HOW=""
	for i in $(seq 1 "$HA_SERVERS"); do
		ns="ip netns exec $LAB-s$i"
		if $ns tc qdisc add dev eth1 root handle 1: prio bands 3 priomap 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2>/dev/null &&
			$ns tc qdisc add dev eth1 parent 1:3 handle 30: netem loss 30% 2>/dev/null &&
			$ns tc filter add dev eth1 parent 1: protocol ip prio 1 u32 \
				match ip protocol 17 0xff match ip dport 1196 0xffff flowid 1:3 2>/dev/null; then
			LOSS_HOW="tc netem loss 30% + u32 filter udp dport 1196"
		elif command -v nft >/dev/null &&
			$ns nft add table ip vslab &&
			$ns nft add chain ip vslab out '{ type filter hook output priority 0; }' &&
			$ns nft add rule ip vslab out oifname eth1 udp dport 1196 numgen random mod 100 lt 30 counter drop; then
			LOSS_HOW="nft: oifname eth1 udp dport 1196 numgen random mod 100 lt 30 drop"
		elif command -v iptables >/dev/null &&
			$ns iptables -A OUTPUT -o eth1 -p udp --dport 1196 -m statistic --mode random --probability 0.3 -j DROP; then
			LOSS_HOW="iptables -m statistic --probability 0.3 on udp dport 1196"
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
case_sync_loss() {
	local label=7 ip1 loss
	ha_lab 3 1 || { not_ok "$label: lab up"; return; }
	if ! netem_sync_loss; then
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
	ha_teardown
}

# 8: sync security.
cat >"$LAB_TMP/pcap.py" <<'PY'
# pcap.py FILE payloads|count|find HEX...|inject SRC MODE IFADDR
import socket, struct, sys
def packets(path):
    d = open(path, "rb").read()
    if len(d) < 24: return
    le = d[:4] == b"\xd4\xc3\xb2\xa1"
    e = "<" if le else ">"
    link = struct.unpack(e + "I", d[20:24])[0]
    off = 24
    while off + 16 <= len(d):
        _, _, incl, _ = struct.unpack(e + "IIII", d[off:off + 16]); off += 16
        f = d[off:off + incl]; off += incl
        l2 = 14 if link == 1 else 16 if link == 113 else 0
        ip = f[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17: continue
        ihl = (ip[0] & 15) * 4
        yield ip[:ihl], ip[ihl:ihl + 8], ip[ihl + 8:]
cmd, path = sys.argv[1], sys.argv[2]
pk = list(packets(path))
if cmd == "count":
    print(len(pk))
elif cmd == "find":   # exit 0 if any payload contains any of the byte strings
    needles = [bytes.fromhex(h) for h in sys.argv[3:]]
    sys.exit(0 if any(n in p for _, _, p in pk for n in needles) else 1)
elif cmd == "inject":
    src, mode, ifaddr = sys.argv[3], sys.argv[4], sys.argv[5]
    cand = [x for x in pk if socket.inet_ntoa(x[0][12:16]) == src]
    if not cand: sys.exit("no datagram from " + src)
    iph, udph, pay = cand[len(cand) // 2]
    if mode == "flip": pay = pay[:-1] + bytes([pay[-1] ^ 0x55])
    elif mode == "truncate": pay = pay[:5]
    udph = udph[:4] + struct.pack("!HH", 8 + len(pay), 0)
    iph = bytearray(iph); iph[2:4] = struct.pack("!H", len(iph) + 8 + len(pay))
    iph[10:12] = b"\0\0"
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth1")
    s.sendto(bytes(iph) + udph + pay, (socket.inet_ntoa(iph[16:20]), 0))
    print(f"injected {mode}: {len(pay)} bytes from {src} to {socket.inet_ntoa(iph[16:20])}")
PY

case_security() {
	local label=8 m b cap=$LAB_TMP/sync.pcap tp a0 r0 m0 a1 r1 m1 cip n
	ha_lab 3 1 || { not_ok "$label: lab up"; return; }
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
	n=$(python3 "$LAB_TMP/pcap.py" count "$cap")
	check "$label: sync datagrams were captured on the sync link ($n)" test "${n:-0}" -gt 0
	cip=$(printf '%02x' $(tr . ' ' <<<"${IP0[1]:-0.0.0.0}"))
	check "$label: no sync datagram shows the client's name \"alice\" in plaintext" \
		bash -c "! python3 '$LAB_TMP/pcap.py' find '$cap' $(printf alice | od -An -tx1 | tr -d ' \n')"
	check "$label: no sync datagram shows the tunnel IP ${IP0[1]} ($cip) or the client's address in plaintext" \
		bash -c "! python3 '$LAB_TMP/pcap.py' find '$cap' $cip c6120065"
	check "$label: no sync datagram shows the CA's name in plaintext" \
		bash -c "! python3 '$LAB_TMP/pcap.py' find '$cap' $(printf 'vpnsyncd lab CA' | od -An -tx1 | tr -d ' \n')"
	a0=$(sync_field "$b" rejected.auth)
	r0=$(sync_field "$b" rejected.replay)
	m0=$(sync_field "$b" rejected.malformed)
	say "$label: s$b before: rejected auth ${a0:-?}, replay ${r0:-?}, malformed ${m0:-?}"
	# From the master's own namespace, with its own addresses and ports.
	ip netns exec "$LAB-s$m" python3 "$LAB_TMP/pcap.py" inject "$cap" "198.19.0.1$m" replay "198.19.0.1$m" >&2
	ip netns exec "$LAB-s$m" python3 "$LAB_TMP/pcap.py" inject "$cap" "198.19.0.1$m" flip "198.19.0.1$m" >&2
	ip netns exec "$LAB-s$m" python3 "$LAB_TMP/pcap.py" inject "$cap" "198.19.0.1$m" truncate "198.19.0.1$m" >&2
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
	ha_teardown
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
	*) say "unknown case $c" ;;
	esac
	say "=== case $c: $((SECONDS - t0)) s"
done
say "all cases: $((SECONDS - T_ALL)) s"
summary
