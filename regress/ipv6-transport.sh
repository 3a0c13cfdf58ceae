#!/usr/bin/env bash
# IPv6 transport: a server that listens on an IPv6 address (besides its
# IPv4 VIP) and a stock OpenVPN 2.6 client that connects to it over IPv6,
# then reaches the inside host through the tunnel. One server, no failover
# (the lab's keepalived moves IPv4 VIPs only). Under a minute.
. "$(dirname "$0")/lib.sh"
need_root
ensure_user
command -v openvpn >/dev/null || { say "FATAL: openvpn is not installed (regress/install-deps)"; exit 2; }

PUB6=fd00:18::10
PKI=$LAB_TMP/pki
make_pki "$PKI"
lab_topology 1 1
ip -n "$LAB-s1" addr add "$PUB_VIP/24" dev eth0
ip -n "$LAB-s1" addr add "$IN_VIP/24" dev eth1
ip -n "$LAB-s1" addr add "$PUB6/64" dev eth0 nodad
ip -n "$LAB-c1" addr add fd00:18::101/64 dev eth0 nodad
SOCK=$LAB_TMP/vpnsyncd.sock
{
	server_base_conf "$SOCK"
	echo "listen on $PUB6 port 1194"
} >"$LAB_TMP/vpnsyncd.conf"
ip netns exec "$LAB-s1" "$VPNSYNCD" -d -v -f "$LAB_TMP/vpnsyncd.conf" 2>>"$LAB_TMP/server.log" &
LAB_PIDS+=("$!")
check "the server starts" wait_for 10 "$VPNSYNCCTL" -s "$SOCK" show summary
say "$("$VPNSYNCCTL" -s "$SOCK" show summary | grep Listen)"
check "the server listens on $PUB6" bash -c "'$VPNSYNCCTL' -s '$SOCK' show summary | grep -q '$PUB6'"

client_conf alice "$PKI" | sed "s/^remote .*/remote $PUB6 1194/; s/^proto udp$/proto udp6/" >"$LAB_TMP/c1.ovpn"
: >"$LAB_TMP/c1.log"
ip netns exec "$LAB-c1" openvpn --config "$LAB_TMP/c1.ovpn" --log "$LAB_TMP/c1.log" &
LAB_PIDS+=("$!")
connected() { grep -q "Initialization Sequence Completed" "$LAB_TMP/c1.log"; }
check "the client connects over IPv6" wait_for 20 connected
connected || { say "the client's log ends:"; tail -n 10 "$LAB_TMP/c1.log" >&2; }
say "$("$VPNSYNCCTL" -s "$SOCK" show clients)"
check "show clients lists the client's IPv6 address" \
	bash -c "'$VPNSYNCCTL' -s '$SOCK' show clients | grep -q 'fd00:18::101'"
check "ping to the inside host through the tunnel" \
	ip netns exec "$LAB-c1" ping -c 3 -i 0.2 -W 1 "$INSIDE_IP"
summary
