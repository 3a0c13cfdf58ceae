#!/usr/bin/env bash
# client-config-dir in the HA lab: two servers under keepalived with the
# same directory, stock OpenVPN 2.6 clients. Checks:
#   - every member routes the iroute network 192.168.50.0/24 to tun0
#     (vpnsyncd's kernel route), a reload adds and removes such routes, an
#     identical route that was there is kept, a conflicting one is logged
#     with the fix;
#   - alice (ifconfig-push 10.8.0.50, a route pushed to her alone) gets her
#     address and her route, bob does not get the route;
#   - site to site: bob has 192.168.50.0/24 behind him (the namespace
#     "site", forwarded by bob's namespace; `iroute` in his file): the
#     inside host and the site host reach each other through the VIPs;
#   - carol (`disable`) is refused; a second alice too (duplicate-cn refuse);
#   - bob (dynamic) leaves, dave takes another address, bob comes back to
#     his own (the lease table);
#   - the master loses power: alice keeps 10.8.0.50 with no restart, the
#     inside host reaches the site again through the new master, and bob,
#     restarted there, gets his address back from the synced leases;
#   - at exit the daemon removes its routes.
# About half a minute (PKI, two servers, five clients, one power cut).
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived

SITE_NET=192.168.50.0/24
SITE_HOST=192.168.50.10
ALICE_IP=10.8.0.50
ALICE_ROUTE="203.0.113.0 255.255.255.0"

# make_client NAME: one more client certificate of the lab CA.
make_client() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
		-keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null &&
		openssl ca -batch -config "$PKI/ca/openssl.cnf" -extensions client -in "$PKI/$1.csr" \
			-out "$PKI/$1.crt" -notext 2>/dev/null && chmod 600 "$PKI/$1.key"
}

make_pki "$PKI"
make_client carol && make_client dave || { not_ok "client certificates"; summary; exit 1; }
CCD=$LAB_TMP/ccd
mkdir -p "$CCD"
printf '%s\n' "ifconfig-push $ALICE_IP 255.255.255.0" "push \"route $ALICE_ROUTE\"" >"$CCD/alice"
printf '%s\n' "iroute 192.168.50.0 255.255.255.0" >"$CCD/bob"
printf '%s\n' "disable" >"$CCD/carol"
HA_CONF_EXTRA=$(printf '%s\n' "client-config-dir \"$CCD\"" "duplicate-cn refuse")

ha_lab 2 5 || { not_ok "lab up"; summary; exit 1; }
M=$(master_of)
B=$((3 - M))

# The site behind bob: 192.168.50.1 on bob's lan0, the site host .10.
lab_netns "$LAB-site"
ip link add lan0 netns "$LAB-c2" type veth peer name eth0 netns "$LAB-site"
ip -n "$LAB-c2" addr add 192.168.50.1/24 dev lan0
ip -n "$LAB-c2" link set lan0 up
ip -n "$LAB-site" addr add "$SITE_HOST/24" dev eth0
ip -n "$LAB-site" link set eth0 up
ip -n "$LAB-site" route add default via 192.168.50.1
ip netns exec "$LAB-c2" sysctl -qw net.ipv4.ip_forward=1
ip -n "$LAB-in" route add "$SITE_NET" via "$IN_VIP"

has_line() { grep -Eq "$2" "$1"; }
no_line() { ! grep -Eq "$2" "$1"; }
kernel_route() { ip -n "$LAB-s$1" -4 route show "$2" | grep -q "dev tun0"; }
no_kernel_route() { [ -z "$(ip -n "$LAB-s$1" -4 route show "$2")" ]; }
inside_to_site() { ip netns exec "$LAB-in" ping -c "${1:-3}" -i 0.2 -W 1 "$SITE_HOST" >/dev/null 2>&1; }
site_to_inside() { ip netns exec "$LAB-site" ping -c 3 -i 0.2 -W 1 "$INSIDE_IP" >/dev/null 2>&1; }
ping_inside() { ip netns exec "$LAB-c$1" ping -c "${2:-3}" -i 0.2 -W 1 "$INSIDE_IP" >/dev/null 2>&1; }
taken_over() {
	local m
	m=$(master_of)
	[ -n "$m" ] && [ "$m" != "$1" ] && ha_settled && [ "$(master_of)" = "$m" ]
}
# stop_client N NAME SERVER [SECONDS]: SIGTERM to client N, whose exit notification
# ends its session on SERVER (logged within SECONDS, 10 by default).
stop_client() {
	local pid
	pid=$(eval echo "\${HA_CLIENT$1}")
	kill -TERM "$pid"
	wait_for 10 bash -c "! kill -0 $pid" &&
		wait_for "${4:-10}" has_line "$(ha_log "$3")" "$2 .*session ended"
}

for i in 1 2; do check "s$i routes $SITE_NET to tun0 (iroute of bob)" kernel_route $i "$SITE_NET"; done

ha_start_client 1 alice
ha_start_client 2 bob explicit-exit-notify
ha_start_client 3 carol
check "alice connects through the VIP" wait_for 20 ha_connected 1 || ha_explain
check "bob connects through the VIP" wait_for 20 ha_connected 2 || ha_explain
check "alice gets her ifconfig-push address $ALICE_IP (has: $(tunnel_ip 1))" test "$(tunnel_ip 1)" = "$ALICE_IP"
check "alice was pushed her own route $ALICE_ROUTE" has_line "$LAB_TMP/c1.log" "PUSH_REPLY.*route $ALICE_ROUTE"
check "alice's kernel routes 203.0.113.0/24 to her tun0" \
	bash -c "ip -n $LAB-c1 route show 203.0.113.0/24 | grep -q tun0"
check "bob was not pushed alice's route" no_line "$LAB_TMP/c2.log" "route $ALICE_ROUTE"
check "the inside host reaches the site host $SITE_HOST behind bob" wait_for 10 inside_to_site
check "the site host reaches the inside host through bob's tunnel" site_to_inside
check "s$M refuses carol (disable)" wait_for 15 has_line "$(ha_log "$M")" "carol is disabled in the client-config-dir"
check "carol has no tunnel" no_line "$LAB_TMP/c3.log" "Initialization Sequence Completed"
ha_start_client 5 alice
check "s$M refuses a second alice (duplicate-cn refuse)" \
	wait_for 15 has_line "$(ha_log "$M")" "alice is already connected \\(duplicate-cn refuse\\)"
kill -TERM "$HA_CLIENT5"
check "the first alice keeps her tunnel" ping_inside 1

BOB_IP=$(tunnel_ip 2)
check "bob leaves (exit notification)" stop_client 2 bob "$M"
ha_start_client 4 dave
check "dave connects" wait_for 20 ha_connected 4 || ha_explain
DAVE_IP=$(tunnel_ip 4)
check "dave gets another address than bob's leased $BOB_IP (has: $DAVE_IP)" \
	test -n "$DAVE_IP" -a "$DAVE_IP" != "$BOB_IP"
ha_start_client 2 bob explicit-exit-notify
check "bob comes back" wait_for 20 ha_connected 2 || ha_explain
check "bob gets his address $BOB_IP back (has: $(tunnel_ip 2))" test "$(tunnel_ip 2)" = "$BOB_IP"
check "the inside host reaches the site again" wait_for 10 inside_to_site
check "the backup s$B holds alice's session" wait_for 5 has_line "$(ha_log "$B")" "ghost alice .*installed"
check "the backup s$B holds bob's new session" \
	wait_for 5 bash -c "[ \$(grep -c 'ghost bob .*installed' $(ha_log "$B")) -ge 2 ]"

T_FAIL=$EPOCHREALTIME
power_cut "$M"
say "power cut of the master s$M"
check "s$B takes both VIPs over" wait_for 15 taken_over "$M" || ha_explain
say "s$(master_of) is master after $(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s"
check "the inside host reaches the site through the new master s$B" wait_for 30 inside_to_site 2
say "site reached again $(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s after the power cut"
check "alice reaches the inside host after the failover" wait_for 10 ping_inside 1 2
check "alice keeps $ALICE_IP (now $(tunnel_ip 1))" test "$(tunnel_ip 1)" = "$ALICE_IP"
if client_restarted 1; then
	not_ok "alice did not restart nor warn (replay, bad packet ID)"
	client_trouble 1 | sed 's/^/    /' >&2
else
	ok "alice did not restart nor warn (replay, bad packet ID)"
fi
# Until the new master renegotiates bob's keys, his client's EXIT (cc-exit:
# a message inside the old TLS session, which is not copied) cannot be
# read there: his session ends by ping-restart (10 s) instead (docs/SYNC.md).
check "bob leaves the new master (by ping-restart within 10 s + 5 s)" stop_client 2 bob "$B" 15
ha_start_client 2 bob explicit-exit-notify
check "bob connects to the new master" wait_for 20 ha_connected 2 || ha_explain
check "bob gets $BOB_IP from the synced lease (has: $(tunnel_ip 2))" test "$(tunnel_ip 2)" = "$BOB_IP"
check "the inside host reaches the site through bob's new session" wait_for 10 inside_to_site

# Reload: a new file's iroute is routed, a removed one is unrouted; a
# network the kernel routes elsewhere is logged with the fix.
printf '%s\n' "iroute 192.168.60.0 255.255.255.0" >"$CCD/dave"
ip -n "$LAB-s$B" route add 192.168.70.0/24 dev eth1
printf '%s\n' "iroute 192.168.70.0 255.255.255.0" >"$CCD/erin"
ip -n "$LAB-s$B" route add 192.168.80.0/24 dev tun0
printf '%s\n' "iroute 192.168.80.0 255.255.255.0" >"$CCD/frank"
check "s$B reloads" ha_ctl "$B" reload >/dev/null
check "s$B routes dave's new iroute 192.168.60.0/24 to tun0" wait_for 5 kernel_route "$B" 192.168.60.0/24
check "s$B logs the conflicting route of erin's iroute and the fix" \
	wait_for 5 has_line "$(ha_log "$B")" "iroute 192.168.70.0/24: the kernel already routes it dev eth1: .*remove that route or the iroute, then reload"
check "s$B leaves the other route to 192.168.70.0/24 alone" \
	bash -c "ip -n $LAB-s$B route show 192.168.70.0/24 | grep -q 'dev eth1'"
check "s$B takes the identical route to 192.168.80.0/24 that was there" \
	wait_for 5 has_line "$(ha_log "$B")" "route 192.168.80.0/24 dev tun0 was there already"
rm "$CCD/dave" "$CCD/erin" "$CCD/frank"
check "s$B reloads again" ha_ctl "$B" reload >/dev/null
check "s$B removed the route of the removed file" wait_for 5 no_kernel_route "$B" 192.168.60.0/24
check "s$B still routes bob's $SITE_NET" kernel_route "$B" "$SITE_NET"
check "s$B leaves the route to 192.168.80.0/24 it did not add" kernel_route "$B" 192.168.80.0/24

kill -TERM "$(cat "$(ha_dir "$B")/vpnsyncd.pid")"
check "s$B removes its route to $SITE_NET at exit" \
	wait_for 10 has_line "$(ha_log "$B")" "route $SITE_NET dev tun0 removed"
summary
