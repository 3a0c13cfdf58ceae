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
ha_start_client 1 alice
check "the first alice (c1) connects" wait_for 20 ha_connected 1 || ha_explain
IP=$(tunnel_ip 1)
check "c1 reaches the inside host from $IP" ping_inside 1
check "the backup s$B holds c1's session" wait_for 5 only_client "$B" 1 "$IP"

ha_start_client 2 alice
check "the second alice (c2) connects" wait_for 20 ha_connected 2 || ha_explain
check "s$M ended c1's session for it (duplicate-cn replace)" wait_for 5 replaced "$M" 1
check "c2 gets the address c1 had, $IP (has: $(tunnel_ip 2))" test "$(tunnel_ip 2)" = "$IP"
check "c2 reaches the inside host" wait_for 5 ping_inside 2
check "c1's traffic no longer passes" bash -c "! ip netns exec $LAB-c1 ping -c 3 -i 0.2 -W 1 $INSIDE_IP >/dev/null 2>&1"
check "s$M serves one alice, c2" only_client "$M" 2 "$IP"
check "the backup s$B holds c2's session alone (c1's deleted)" wait_for 5 only_client "$B" 2 "$IP"
# Before its keepalive timeout makes it reconnect and replace c2 in turn.
check "c1 exits" stop_client 1

ha_cut_master
check "c2 reaches the inside host through the new master" wait_for 20 ping_inside 2 2
check_no_restart 2 "c2"
ha_start_client 3 alice
check "a third alice (c3) connects to the new master" wait_for 20 ha_connected 3 || ha_explain
check "s$B ended c2's taken-over session for it" wait_for 5 replaced "$B" 2
check "c3 gets $IP (has: $(tunnel_ip 3))" test "$(tunnel_ip 3)" = "$IP"
check "c3 reaches the inside host" wait_for 5 ping_inside 3
check "c2's traffic no longer passes" bash -c "! ip netns exec $LAB-c2 ping -c 3 -i 0.2 -W 1 $INSIDE_IP >/dev/null 2>&1"
check "s$B serves one alice, c3" only_client "$B" 3 "$IP"
summary
