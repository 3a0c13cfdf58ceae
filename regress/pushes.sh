#!/usr/bin/env bash
# Pushes with a stock OpenVPN 2.6 client: a server with 3,000 push route
# statements (a continued PUSH_REPLY of about 90 parts) and the options of
# push redirect-gateway / block-outside-dns / route-ipv6 / push "...": the
# client completes within the bound, installs every route and reaches the
# inside host. Prints how long the reply took. One server, under a minute.
. "$(dirname "$0")/lib.sh"
lab_start openvpn

ROUTES=3000
BOUND=10
solo_lab
LOG=$LAB_TMP/server.log

{
	server_base_conf "$SOCK"
	echo "keepalive 2 10"
	for i in $(seq 0 $((ROUTES - 1))); do echo "push route 10.$((100 + i / 256)).$((i % 256)).0/24"; done
	echo "push route-ipv6 2001:db8:100::/48"
	echo 'push "route-metric 7"'
	echo "push block-outside-dns"
} >"$LAB_TMP/vpnsyncd.conf"
check "the server with $ROUTES push routes starts" solo_start "$LAB_TMP/vpnsyncd.conf" "$LOG"

client_conf alice "$PKI" "pull-filter ignore block-outside-dns" >"$LAB_TMP/c1.ovpn"
START=$EPOCHREALTIME
solo_client 1 "$LAB_TMP/c1.ovpn"
check "the client completes within 30 s" wait_for 30 ha_connected 1
END=$EPOCHREALTIME
ha_connected 1 || { say "the client's log ends:"; tail -n 15 "$LAB_TMP/c1.log" | cut -c1-300 >&2; }
TOOK=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.2f", b - a }')
PARTS=$(grep -c "PUSH: Received control message: 'PUSH_REPLY" "$LAB_TMP/c1.log")
say "pushes: $ROUTES routes in $PARTS PUSH_REPLY parts: the client completed $TOOK s after it started"
check "the client completed within $BOUND s" awk -v t="$TOOK" -v b="$BOUND" 'BEGIN { exit !(t < b) }'
N=$(ip -n "$LAB-c1" -4 route show | grep -c "^10\.1[01][0-9]\.")
say "pushes: the client installed $N of the $ROUTES routes"
for i in $(seq 0 $((ROUTES - 1))); do echo "10.$((100 + i / 256)).$((i % 256)).0/24"; done | sort >"$LAB_TMP/want"
ip -n "$LAB-c1" -4 route show | awk '{print $1}' | sort | comm -23 "$LAB_TMP/want" - | head -n 3 | sed 's/^/missing: /' >&2
check "every pushed route is installed" test "$N" -eq "$ROUTES"
check "the pushed IPv6 route reached the client" grep -q "route-ipv6 2001:db8:100::/48" "$LAB_TMP/c1.log"
check "the generic push (route-metric 7) applies to the pushed routes" \
	bash -c "ip -n '$LAB-c1' -4 route show 198.19.0.0/24 | grep -q 'metric 7'"
check "ping to the inside host through the tunnel" \
	ip netns exec "$LAB-c1" ping -c 3 -i 0.2 -W 1 "$INSIDE_IP"
grep -E 'SIGUSR1|Restart pause|Options error|ERROR' "$LAB_TMP/c1.log" | head -n 5 | cut -c1-300 >&2
check "the client did not restart" bash -c "! grep -Eq 'SIGUSR1|Restart pause|Options error' '$LAB_TMP/c1.log'"
summary
