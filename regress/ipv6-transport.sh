#!/usr/bin/env bash
# IPv6 transport: a server that listens on an IPv6 address (besides its
# IPv4 VIP) and a stock OpenVPN 2.6 client that connects to it over IPv6,
# then reaches the inside host through the tunnel. One server, no failover
# (the lab's keepalived moves IPv4 VIPs only). Under a minute.
. "$(dirname "$0")/lib.sh"
lab_start openvpn

PUB6=fd00:18::10
solo_lab
ip -n "$LAB-s1" addr add "$PUB6/64" dev eth0 nodad
ip -n "$LAB-c1" addr add fd00:18::101/64 dev eth0 nodad
{
	server_base_conf "$SOCK"
	echo "listen on $PUB6 port 1194"
} >"$LAB_TMP/vpnsyncd.conf"
check "the server starts" solo_start "$LAB_TMP/vpnsyncd.conf"
say "$(solo_ctl show summary | grep Listen)"
check "the server listens on $PUB6" bash -c "'$VPNSYNCCTL' -s '$SOCK' show summary | grep -q '$PUB6'"

client_conf alice "$PKI" | sed "s/^remote .*/remote $PUB6 1194/; s/^proto udp$/proto udp6/" >"$LAB_TMP/c1.ovpn"
solo_client 1 "$LAB_TMP/c1.ovpn"
check "the client connects over IPv6" wait_for 20 ha_connected 1
ha_connected 1 || { say "the client's log ends:"; tail -n 10 "$LAB_TMP/c1.log" >&2; }
say "$(solo_ctl show clients)"
check "show clients lists the client's IPv6 address" \
	bash -c "'$VPNSYNCCTL' -s '$SOCK' show clients | grep -q 'fd00:18::101'"
check "ping to the inside host through the tunnel" \
	ip netns exec "$LAB-c1" ping -c 3 -i 0.2 -W 1 "$INSIDE_IP"
summary
