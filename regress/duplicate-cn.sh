#!/usr/bin/env bash
# duplicate-cn replace in the HA lab: two servers under keepalived, three
# stock OpenVPN 2.6 clients with alice's one certificate (c1, c2, c3).
# Checks:
#   - the second alice (c2) replaces the first (c1): the master ends c1's
#     session (logged), c2 gets the address c1 had, c1's traffic no longer
#     passes, the master and the backup hold one alice, c2's;
#   - the master loses power: the new master serves c2's session on
#     (no restart), and a third alice (c3) then replaces that taken-over
#     session there the same way.
# About 40 s (PKI, two servers, three clients, one power cut).
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived python3

HA_CONF_EXTRA="duplicate-cn replace"

# alices I: the sessions server I holds (served or ghosts) as "CLIENT-IP
# TUNNEL-IP" lines, sorted; only alice's exist in this lab.
alices() {
	ha_ctl "$1" -j show clients 2>/dev/null | python3 -c '
import json, sys
for c in sorted(json.load(sys.stdin), key=lambda c: c["real_address"]):
    assert c["common_name"] == "alice", c
    print(c["real_address"].rsplit(":", 1)[0], c["virtual_ip"])'
}
# only_client I N IP: server I holds one session, client N's, at tunnel IP.
only_client() { [ "$(alices "$1")" = "198.18.0.10$2 $3" ]; }
# replaced I N: server I logged that it ended client N's session for a
# newer one.
replaced() {
	has_line "$(ha_log "$1")" "alice \\(198\\.18\\.0\\.10$2:[0-9]+\\): session ended: replaced by a new connection of its common name \\(duplicate-cn replace\\)"
}
# stop_client N: client N exits (no exit notification: its session is gone).
stop_client() {
	local pid
	pid=$(eval echo "\${HA_CLIENT$1}")
	kill -TERM "$pid" && wait_for 10 bash -c "! kill -0 $pid"
}

ha_pair 3 || { summary; exit 1; }
# replaces NEW OLD SERVER: client NEW connects as alice and replaces client
# OLD on SERVER (duplicate-cn replace): OLD's session ended, NEW with its
# address and traffic, OLD's traffic gone, one alice left.
replaces() {
	local new=$1 old=$2 srv=$3
	ha_start_client "$new" alice
	check "alice c$new connects to s$srv" wait_for 20 ha_connected "$new" || ha_explain
	check "s$srv ended c$old's session for it (duplicate-cn replace)" wait_for 5 replaced "$srv" "$old"
	check "c$new gets the address c$old had, $IP (has: $(tunnel_ip "$new"))" test "$(tunnel_ip "$new")" = "$IP"
	check "c$new reaches the inside host" wait_for 5 ping_inside "$new"
	check "c$old's traffic no longer passes" bash -c "! ip netns exec $LAB-c$old ping -c 3 -i 0.2 -W 1 $INSIDE_IP >/dev/null 2>&1"
	check "s$srv serves one alice, c$new" only_client "$srv" "$new" "$IP"
}

ha_start_client 1 alice
check "the first alice (c1) connects" wait_for 20 ha_connected 1 || ha_explain
IP=$(tunnel_ip 1)
check "c1 reaches the inside host from $IP" ping_inside 1
check "the backup s$B holds c1's session" wait_for 5 only_client "$B" 1 "$IP"

replaces 2 1 "$M"
check "the backup s$B holds c2's session alone (c1's deleted)" wait_for 5 only_client "$B" 2 "$IP"
# Before its keepalive timeout makes it reconnect and replace c2 in turn.
check "c1 exits" stop_client 1

ha_cut_master
check "c2 reaches the inside host through the new master" wait_for 20 ping_inside 2 2
check_no_restart 2 "c2"
replaces 3 2 "$B"
summary
