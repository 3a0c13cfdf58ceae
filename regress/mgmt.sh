#!/usr/bin/env bash
# The management interface in the HA lab: two servers under keepalived,
# each with `management ... unix`, stock OpenVPN 2.6 clients alice (c1) and
# bob (c2). regress/mgmt_monitor.py reads each socket the way
# openvpn-monitor does (greeting, version, state, load-stats, status 3).
# Checks:
#   - the master lists both clients with their tunnel addresses, a
#     version openvpn-monitor accepts, server mode; the backup lists none
#     and says BACKUP in GLOBAL_STATS; the socket is 0600;
#   - `kill bob` on the master: bob is told to restart and comes back as a
#     new session (another client id, port and start time); the backup
#     drops the killed session; `client-kill` of the killed session's id
#     is an error and leaves the new one alone;
#   - the master loses power: the new master serves alice's session
#     (the same one, no restart) and bob's new one, never the killed one;
#     the old master's client ids name nobody there;
#   - the same script reads a stock `openvpn --server --management unix`
#     (client c3) alike.
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived python3

MON=$REGRESS_DIR/mgmt_monitor.py
mgmt_sock() { echo "$(ha_dir "$1")/mgmt.sock"; }
# Every server's configuration gets its own management socket.
eval "base_$(declare -f ha_server_conf)"
ha_server_conf() {
	base_ha_server_conf "$@"
	echo "management \"$(mgmt_sock "$1")\" unix"
}
view() { python3 "$MON" monitor "$1"; }
# field JSON EXPR: a value of the monitor's view (a python expression on v).
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
taken_over() {
	local m
	m=$(master_of)
	[ -n "$m" ] && [ "$m" != "$1" ] && ha_settled && [ "$(master_of)" = "$m" ]
}
has_line() { grep -Eq "$2" "$1"; }
# lists N CN...: server N's management status lists exactly these names.
lists() {
	local s=$1 want got
	shift
	want=$(printf '%s\n' "$@" | sort | paste -sd' ')
	got=$(field "$(view "$(mgmt_sock "$s")")" '" ".join(sorted(x["common_name"] for x in v["sessions"].values()))')
	[ "$got" = "$want" ]
}
# sess N CN: CN's session on server N as its status shows it: real port,
# connected since (a peer-id freed by a kill may be reused).
sess() {
	field "$(view "$(mgmt_sock "$1")")" \
		"[' '.join((str(x['port']), str(x['connected_since']))) for x in v['sessions'].values() if x['common_name'] == '$2'][0]"
}
# cid N CN: CN's client id on server N (each member numbers its own).
cid() {
	field "$(view "$(mgmt_sock "$1")")" "[x['client_id'] for x in v['sessions'].values() if x['common_name'] == '$2'][0]"
}
client_kill() { python3 "$MON" command "$(mgmt_sock "$1")" "client-kill $2"; }
ghost_count() { test "$(ha_ctl "$1" show clients 2>/dev/null | awk 'NR > 1' | wc -l)" -eq "$2"; }

ha_lab 2 3 || { not_ok "lab up"; summary; exit 1; }
M=$(master_of)
B=$((3 - M))
ha_start_client 1 alice
ha_start_client 2 bob
check "alice and bob connect through the VIP" wait_for 30 bash -c "grep -q 'Initialization Sequence Completed' $LAB_TMP/c1.log && grep -q 'Initialization Sequence Completed' $LAB_TMP/c2.log" || ha_explain
IP1=$(tunnel_ip 1)
IP2=$(tunnel_ip 2)

check "the management socket is mode 0600" test "$(stat -c %a "$(mgmt_sock "$M")")" = 600
check "s$M's management status lists alice and bob" wait_for 5 lists "$M" alice bob
V=$(view "$(mgmt_sock "$M")")
say "master view: $V"
check "openvpn-monitor's version rule: $(field "$V" 'v["release"]')" test "$(field "$V" 'v["version"] >= [2, 4, 0]')" = True
check "state: CONNECTED, server mode" test "$(field "$V" 'v["state"]["connected"], v["state"]["mode"]')" = "('CONNECTED', 'Server')"
check "load-stats: nclients=2" test "$(field "$V" 'v["stats"]["nclients"]')" = 2
check "alice at $IP1, bob at $IP2" test "$(field "$V" 'v["sessions"]["'"$IP1"'"]["common_name"], v["sessions"]["'"$IP2"'"]["common_name"]')" = "('alice', 'bob')"
check "GLOBAL_STATS: cluster_role MASTER" test "$(field "$V" 'v["global_stats"]["cluster_role"]')" = MASTER
check "s$B holds both sessions as ghosts" wait_for 5 ghost_count "$B" 2
VB=$(view "$(mgmt_sock "$B")")
check "the backup s$B lists no client and says BACKUP" test "$(field "$VB" 'len(v["sessions"]), v["stats"]["nclients"], v["global_stats"]["cluster_role"]')" = "(0, 0, 'BACKUP')"

OLD_BOB=$(sess "$M" bob)
OLD_BOB_CID=$(cid "$M" bob)
ALICE=$(sess "$M" alice)
ALICE_CID=$(cid "$M" alice)
ANSWER=$(python3 "$MON" command "$(mgmt_sock "$M")" "kill bob")
check "kill bob: $ANSWER" test "$ANSWER" = "SUCCESS: common name 'bob' found, 1 client(s) killed"$'\r'
check "bob is told to restart" wait_for 10 has_line "$LAB_TMP/c2.log" "RESTART|SIGUSR1"
check "bob comes back as a new session" wait_for 30 bash -c "[ \$(grep -c 'Initialization Sequence Completed' $LAB_TMP/c2.log) -ge 2 ]"
check "s$M lists bob again" wait_for 5 lists "$M" alice bob
NEW_BOB=$(sess "$M" bob)
check "bob's session is another (port, since: $OLD_BOB -> $NEW_BOB)" test "$NEW_BOB" != "$OLD_BOB"
NEW_BOB_CID=$(cid "$M" bob)
check "bob's new client id is higher ($OLD_BOB_CID -> $NEW_BOB_CID)" test "$NEW_BOB_CID" -gt "$OLD_BOB_CID"
ANSWER=$(client_kill "$M" "$OLD_BOB_CID")
check "client-kill $OLD_BOB_CID (the killed session): $ANSWER" test "$ANSWER" = "ERROR: client-kill command failed"$'\r'
check "s$B dropped the killed session (2 sessions, not 3)" wait_for 5 ghost_count "$B" 2
check "bob's new session lives on" test "$(sess "$M" bob)" = "$NEW_BOB"

power_cut "$M"
say "power cut of the master s$M"
check "s$B takes both VIPs over" wait_for 15 taken_over "$M" || ha_explain
check "s$B's management status lists alice and bob" wait_for 10 lists "$B" alice bob
V2=$(view "$(mgmt_sock "$B")")
say "new master view: $V2"
check "alice's session went on ($ALICE)" test "$(sess "$B" alice)" = "$ALICE"
check "bob is his new session, not the killed one ($OLD_BOB)" test "$(sess "$B" bob)" = "$NEW_BOB"
for id in "$ALICE_CID" "$NEW_BOB_CID"; do
	ANSWER=$(client_kill "$B" "$id")
	check "client-kill $id (s$M's id) on s$B: $ANSWER" test "$ANSWER" = "ERROR: client-kill command failed"$'\r'
done
check "s$B still lists alice and bob" lists "$B" alice bob
check "GLOBAL_STATS: cluster_role MASTER on s$B" test "$(field "$V2" 'v["global_stats"]["cluster_role"]')" = MASTER
if client_restarted 1; then
	not_ok "alice did not restart"
	client_trouble 1 | sed 's/^/    /' >&2
else
	ok "alice did not restart"
fi

# The same reader on a stock server: OpenVPN 2.6 with a management socket,
# on s$B's own address, port 1195, client c3.
STOCK=$LAB_TMP/stock.sock
ip netns exec "$LAB-s$B" openvpn --server 10.9.0.0 255.255.255.0 --topology subnet --dev tun9 --dev-type tun \
	--proto udp --local "198.18.0.1$B" --port 1195 --ca "$PKI/ca.crt" --cert "$PKI/server.crt" --key "$PKI/server.key" \
	--dh none --tls-auth "$PKI/ta.key" 0 --keepalive 2 10 --management "$STOCK" unix --verb 3 \
	--log "$LAB_TMP/stock.log" &
LAB_PIDS+=("$!")
disown $!
client_conf alice "$PKI" "tls-auth $PKI/ta.key 1" | sed "s/^remote .*/remote 198.18.0.1$B 1195/" >"$LAB_TMP/c3.ovpn"
ip netns exec "$LAB-c3" openvpn --config "$LAB_TMP/c3.ovpn" --log "$LAB_TMP/c3.log" &
LAB_PIDS+=("$!")
disown $!
check "a stock client connects to the stock server" wait_for 30 has_line "$LAB_TMP/c3.log" "Initialization Sequence Completed"
stock_lists() { [ "$(field "$(view "$STOCK")" 'len(v["sessions"])')" = 1 ]; }
check "the stock server's status lists its client" wait_for 5 stock_lists
VS=$(view "$STOCK")
say "stock view: $VS"
check "both read alike: the same fields per client, server mode, a 2.4+ version" test \
	"$(field "$VS" 'sorted(list(v["sessions"].values())[0]), v["state"]["mode"], v["version"] >= [2, 4, 0]')" = \
	"$(field "$V2" 'sorted(list(v["sessions"].values())[0]), v["state"]["mode"], v["version"] >= [2, 4, 0]')"
summary
