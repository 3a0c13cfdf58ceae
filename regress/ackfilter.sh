#!/usr/bin/env bash
# TCP through the ACK filter (ack-filter yes, engine/src/ackfilter.rs): one
# server (s1), a stock OpenVPN 2.6 client (c1), the inside host streaming
# to the client (a download: the client's ACKs are what the filter
# thins). regress/tcpstream.py checks every byte of one connection.
#
#   1  a clean link: the stream goes on, every byte in order, and the
#      engine counts dropped ACKs (the filter did act)
#   2  1 % of the server's datagrams to the client dropped (nft in c1's
#      namespace): the client sends duplicate ACKs and SACKs, which the
#      filter must pass; the inside host's TCP still recovers every loss
#      (no stall, no reset, every byte in order)
. "$(dirname "$0")/lib.sh"
lab_start openvpn python3 nft
STREAM=$REGRESS_DIR/tcpstream.py
PORT=6100
RATE=40000000 # bytes/s the inside host offers

solo_lab
CONF=$LAB_TMP/vpnsyncd.conf
{
	server_base_conf "$SOCK"
	echo "ack-filter yes"
} >"$CONF"
solo_start "$CONF" || { say "FATAL: vpnsyncd did not start"; cat "$LAB_TMP/server.log" >&2; exit 1; }
client_conf alice "$PKI" >"$LAB_TMP/c1.ovpn"
solo_client 1 "$LAB_TMP/c1.ovpn"
check "the stock client connects" wait_for 30 ha_connected 1 || { tail -5 "$LAB_TMP/c1.log" >&2; summary; exit 1; }

received() { awk '$1 == "progress" { n = $3 } END { print n + 0 }' "$1"; }
# retransmitted: the inside host's TcpRetransSegs since its namespace began.
retransmitted() { ip netns exec "$LAB-in" nstat -az TcpRetransSegs | awk '$1 == "TcpRetransSegs" { print $2 }'; }
filtered() { solo_ctl show summary | awk '$1 == "Filtered:" { print $2 }'; }

# stream LABEL SECONDS MIN_BYTES: one connection from the inside host to
# the client for SECONDS; every byte checked, at least MIN_BYTES received.
stream() {
	local label=$1 secs=$2 min=$3 slog=$LAB_TMP/serve.$1.log rlog=$LAB_TMP/recv.$1.log s r
	: >"$slog"
	: >"$rlog"
	ip netns exec "$LAB-in" python3 "$STREAM" serve "$INSIDE_IP" "$PORT" "$slog" "$RATE" &
	s=$!
	LAB_PIDS+=("$s")
	wait_for 5 bash -c "ip netns exec '$LAB-in' ss -Hltn 'sport = :$PORT' | grep -q ."
	ip netns exec "$LAB-c1" python3 "$STREAM" recv "$INSIDE_IP" "$PORT" "$rlog" &
	r=$!
	LAB_PIDS+=("$r")
	check "$label: the connection opens" wait_for 10 grep -q "^peer " "$slog"
	sleep "$secs"
	check "$label: no reset, no corrupt byte, no EOF in $secs s" bash -c "! grep -E '^(error|corrupt|eof)' '$rlog'"
	local got
	got=$(received "$rlog")
	check "$label: at least $min bytes in order (got $got)" test "$got" -ge "$min"
	kill "$r" "$s" 2>/dev/null
	wait "$r" "$s" 2>/dev/null
}

before=$(filtered)
stream clean 6 50000000
after=$(filtered)
check "clean: the engine dropped ACKs ($before before, $after after)" test "$after" -gt "$before"

ip netns exec "$LAB-c1" nft -f - <<-EOF
	table inet loss {
		chain in {
			type filter hook input priority 0;
			udp sport 1194 numgen random mod 100 < 1 drop
		}
	}
EOF
retrans_before=$(retransmitted)
stream lossy 6 5000000
retrans_after=$(retransmitted)
check "lossy: the inside host retransmitted ($retrans_before segments before, $retrans_after after)" \
	test "$retrans_after" -gt "$retrans_before"
ip netns exec "$LAB-c1" nft delete table inet loss
summary
