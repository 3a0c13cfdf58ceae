#!/usr/bin/env bash
# Stock OpenVPN 2.6 clients (Debian's openvpn) against vpnsyncd, in the lab:
# one server (s1) holding the VIPs itself, clients c1/c2, the inside host.
# Cases a-h of the engine issue; each prints what it measured.
. "$(dirname "$0")/lib.sh"
need_root
ensure_user
command -v openvpn >/dev/null || { say "FATAL: openvpn is not installed (regress/install-deps)"; exit 2; }

PKI=$LAB_TMP/pki
make_pki "$PKI"
lab_topology 1 2
ip -n "$LAB-s1" addr add "$PUB_VIP/24" dev eth0
ip -n "$LAB-s1" addr add "$IN_VIP/24" dev eth1
SOCK=$LAB_TMP/vpnsyncd.sock
LOG=$LAB_TMP/server.log

# server_conf [extra statements...]: the server configuration.
server_conf() {
	server_base_conf "$SOCK"
	echo "keepalive 2 10"
	local o
	for o in "$@"; do echo "$o"; done
}

start_server() {
	server_conf "$@" >"$LAB_TMP/vpnsyncd.conf"
	: >"$LOG"
	solo_start "$LAB_TMP/vpnsyncd.conf" "$LOG"
}

# start_client N NAME [openvpn options...]: client N connects as NAME.
start_client() {
	local n=$1 name=$2
	shift 2
	client_conf "$name" "$PKI" "$@" >"$LAB_TMP/c$n.ovpn"
	: >"$LAB_TMP/c$n.log"
	ip netns exec "$LAB-c$n" openvpn --config "$LAB_TMP/c$n.ovpn" --log "$LAB_TMP/c$n.log" &
	eval "CLIENT$n=$!"
	LAB_PIDS+=("$!")
}

stop_client() {
	local pid
	eval "pid=\${CLIENT$1:-}"
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
}

connected() { grep -q "Initialization Sequence Completed" "$LAB_TMP/c$1.log"; }
client_ip() { ip -n "$LAB-c$1" -4 addr show tun0 2>/dev/null | awk '/inet /{sub("/.*", "", $2); print $2}'; }
ping_inside() { ip netns exec "$LAB-c$1" ping -c "${2:-3}" -i 0.2 -W 1 "$INSIDE_IP" >/dev/null; }
no_restart() { ! grep -Eq "SIGUSR1|Restart pause|replay|bad packet ID" "$LAB_TMP/c$1.log"; }
show_clients() { "$VPNSYNCCTL" -s "$SOCK" show clients; }

# case_connect LABEL SERVER-STATEMENTS -- CLIENT-OPTIONS: one client, ping.
case_connect() {
	local label=$1 srv=() cli=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do srv+=("$1"); shift; done
	shift
	cli=("$@")
	start_server "${srv[@]}"
	start_client 1 alice "${cli[@]}"
	check "$label: client connects" wait_for 20 connected 1
	check "$label: ping to the inside host through the tunnel" ping_inside 1 5
	say "$(show_clients)"
	check "$label: vpnsyncctl show clients lists alice with her tunnel IP" \
		bash -c "'$VPNSYNCCTL' -s '$SOCK' show clients | awk '\$1==\"alice\"{print \$4}' | grep -qx '$(client_ip 1)'"
}

finish_case() {
	stop_client 1
	stop_client 2
	solo_stop
}

# a. tls-auth and default negotiation (AES-256-GCM), iperf3 10 s.
case_connect "a (tls-auth, negotiated cipher)" "tls-auth \"$PKI/ta.key\" direction 0" -- "tls-auth $PKI/ta.key 1"
check "a: negotiated AES-256-GCM" grep -q "AES-256-GCM" "$LAB_TMP/c1.log"
check "a: the session started from the stateless HMAC cookie" grep -q "after its HMAC cookie" "$LOG"
ip netns exec "$LAB-in" iperf3 -s -1 -D >/dev/null 2>&1
sleep 0.3
OUT=$(ip netns exec "$LAB-c1" timeout 30 iperf3 -c "$INSIDE_IP" -t 10 -f m 2>&1 | grep -E "sender|receiver")
say "a: iperf3: $OUT"
check "a: iperf3 10 s through the tunnel" test -n "$OUT"
check "a: no restart or replay warning at the client" no_restart 1
finish_case

# b. the thesis profile: AES-256-CBC, auth SHA256, tls-auth, keepalive.
case_connect "b (AES-256-CBC/SHA256)" "tls-auth \"$PKI/ta.key\" direction 0" \
	"data-ciphers { AES-256-GCM, AES-256-CBC }" "auth SHA256" -- \
	"tls-auth $PKI/ta.key 1" "data-ciphers AES-256-CBC" "auth SHA256" "keepalive 10 60"
check "b: data channel is AES-256-CBC" grep -q "AES-256-CBC" "$LAB_TMP/c1.log"
finish_case

# c. tls-crypt and CHACHA20-POLY1305.
case_connect "c (tls-crypt, CHACHA20-POLY1305)" "tls-crypt \"$PKI/tc.key\"" -- \
	"tls-crypt $PKI/tc.key" "data-ciphers CHACHA20-POLY1305"
check "c: the session started from the stateless HMAC cookie" grep -q "after its HMAC cookie" "$LOG"
check "c: data channel is CHACHA20-POLY1305" grep -q "CHACHA20-POLY1305" "$LAB_TMP/c1.log"
finish_case

# d. AES-128-GCM.
case_connect "d (AES-128-GCM)" -- "data-ciphers AES-128-GCM"
check "d: data channel is AES-128-GCM" grep -q "AES-128-GCM" "$LAB_TMP/c1.log"
finish_case

# e. two clients at once.
start_server
start_client 1 alice
start_client 2 bob
check "e: both clients connect" wait_for 20 bash -c "grep -q 'Initialization Sequence Completed' '$LAB_TMP/c1.log' && grep -q 'Initialization Sequence Completed' '$LAB_TMP/c2.log'"
check "e: distinct virtual IPs ($(client_ip 1), $(client_ip 2))" test -n "$(client_ip 1)" -a "$(client_ip 1)" != "$(client_ip 2)"
check "e: client 1 passes traffic" ping_inside 1
check "e: client 2 passes traffic" ping_inside 2
check "e: show clients has both" test "$(show_clients | awk 'NR>1' | wc -l)" -eq 2
OUT=$("$VPNSYNCCTL" -s "$SOCK" kill client bob)
check "e: kill client bob ($OUT)" test "$OUT" = 'disconnected 1 session(s) of "bob"'
check "e: bob is gone from show clients, alice stays" bash -c "[ \"\$('$VPNSYNCCTL' -s '$SOCK' show clients | awk 'NR>1 {print \$1}')\" = alice ]"
finish_case

# f. renegotiation: client reneg-sec 10 for 60 s, then server reneg-sec 10,
# each under a 10 Hz ping.
reneg_case() {
	local label=$1 seconds=$2
	check "$label: client connects" wait_for 20 connected 1
	local out loss
	out=$(ip netns exec "$LAB-c1" ping -c $((seconds * 10)) -i 0.1 -W 1 "$INSIDE_IP" 2>&1 | grep "packet loss")
	loss=$(sed -E 's/.* ([0-9.]+)% packet loss.*/\1/' <<<"$out")
	say "$label: $out"
	check "$label: no loss across the key switches ($loss%)" test "$loss" = 0
	local tls kid
	tls=$(grep -c "Control Channel: TLS" "$LAB_TMP/c1.log")
	say "$label: $tls TLS sessions at the client (first one included)"
	check "$label: several renegotiations happened ($tls TLS sessions)" test "$tls" -gt $((seconds / 10 - 1))
	say "$label: server: $(grep -c "key_id [1-7] established" "$LOG") renegotiated keys"
	# From the JSON form: the table's columns move when one is added.
	kid=$("$VPNSYNCCTL" -j -s "$SOCK" show clients | jq -r '.[] | select(.common_name == "alice") | .key_id')
	check "$label: vpnsyncctl shows the key_id advancing (now $kid)" test "${kid:-0}" -gt 0
	check "$label: no restart at the client" no_restart 1
}
start_server
start_client 1 alice "reneg-sec 10"
reneg_case "f (client reneg-sec 10)" 60
finish_case
start_server "reneg-sec 10"
start_client 1 alice
reneg_case "f (server reneg-sec 10)" 30
finish_case

# g. refusals: each gets no session and a clear server log line.
start_server "tls-auth \"$PKI/ta.key\" direction 0"
refused() {
	local label=$1 name=$2 pattern=$3
	shift 3
	: >"$LOG.mark"
	local before
	before=$(wc -l <"$LOG")
	start_client 1 "$name" "$@"
	sleep 6
	check "$label: no session" bash -c "! grep -q 'Initialization Sequence Completed' '$LAB_TMP/c1.log' && [ \$('$VPNSYNCCTL' -s '$SOCK' show clients | wc -l) -eq 1 ]"
	check "$label: server says why" bash -c "tail -n +$((before + 1)) '$LOG' | grep -Eq '$pattern'"
	stop_client 1
}
refused "g (revoked certificate)" mallory "[Rr]evoked" "tls-auth $PKI/ta.key 1"
cp "$PKI/eve.crt" "$PKI/eve-only.crt"
refused "g (certificate of another CA)" eve "[Uu]nknown.*(CA|issuer)|UnknownIssuer" "tls-auth $PKI/ta.key 1"
refused "g (expired certificate)" old "[Ee]xpired" "tls-auth $PKI/ta.key 1"
make_static_key "$LAB_TMP/wrong-ta.key"
refused "g (wrong tls-auth key: no answer at all)" alice "HMAC|authentication" "tls-auth $LAB_TMP/wrong-ta.key 1"
check "g (wrong tls-auth key): the client never heard the server" bash -c "! grep -q 'Peer Connection Initiated' '$LAB_TMP/c1.log'"
finish_case

# h. a killed client is dropped after ping-restart; explicit-exit-notify at once.
start_server
start_client 1 alice
check "h: client connects" wait_for 20 connected 1
kill -9 "$CLIENT1"
T0=$SECONDS
check "h: SIGKILLed client dropped by ping-restart (keepalive 2 10)" wait_for 20 bash -c "[ \$('$VPNSYNCCTL' -s '$SOCK' show clients | wc -l) -eq 1 ]"
say "h: dropped after $((SECONDS - T0)) s"
start_client 1 alice "explicit-exit-notify 1"
check "h: client connects again" wait_for 20 connected 1
stop_client 1
T0=$SECONDS
check "h: explicit-exit-notify drops the session at once" wait_for 3 bash -c "[ \$('$VPNSYNCCTL' -s '$SOCK' show clients | wc -l) -eq 1 ]"
finish_case
# i. clients configured for compression: framing without compressing (the
# server pushes "compress stub-v2" to 2.6 clients, "comp-lzo no" otherwise).
case_connect "i (comp-lzo in the client profile)" -- "comp-lzo no"
check "i: the server pushed a compression stub" grep -Eq "compress stub-v2|comp-lzo no" "$LAB_TMP/c1.log"
check "i: no restart at the client" no_restart 1
finish_case
case_connect "i (compress lz4-v2 in the client profile)" -- "compress lz4-v2"
check "i: no restart at the client (lz4-v2)" no_restart 1
finish_case
summary
