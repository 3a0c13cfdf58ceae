#!/usr/bin/env bash
# IPv6 inside the tunnel (client network6) in the HA lab: two servers under
# keepalived, a stock OpenVPN 2.6 client. Checks:
#   - the client gets fd00:8::2/64 (the host part of its IPv4 10.8.0.2)
#     and pings the inside host's IPv6 address through the tunnel;
#   - the master loses power; the backup takes over and the client pings
#     it again over IPv6, same address, no restart;
#   - `vpnsyncctl show clients` on both masters lists the IPv6 address.
# The inside host routes fd00:8::/64 via an IPv6 VIP on the inside link:
# the lab's keepalived.conf is the example's with that address added to
# the inside instance (virtual_ipaddress_excluded), as a user with IPv6
# inside would add it. Under two minutes.
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived

IN_VIP6=2001:db8:19::1
INSIDE6=2001:db8:19::100
mkdir -p "$LAB_TMP"
sed -E '/^\t\t198\.19\.0\.1\/24 dev eth1$/{n;s|$|\n\tvirtual_ipaddress_excluded {\n\t\t'"$IN_VIP6"'/64 dev eth1\n\t}|}' \
	"$HA_KEEPALIVED_EXAMPLE" >"$LAB_TMP/keepalived6.conf"
grep -q "$IN_VIP6/64 dev eth1" "$LAB_TMP/keepalived6.conf" ||
	{ say "FATAL: $HA_KEEPALIVED_EXAMPLE changed: no inside VIP line to add $IN_VIP6 after (fix the sed)"; exit 1; }
HA_KEEPALIVED_EXAMPLE=$LAB_TMP/keepalived6.conf

HA_CONF_EXTRA=$(printf '%s\n' "client network6 fd00:8::/64" "push route-ipv6 2001:db8:19::/64")
ha_pair 1 || { summary; exit 1; }
for i in 1 2; do
	ip netns exec "$LAB-s$i" sysctl -qw net.ipv6.conf.all.forwarding=1
	ip -n "$LAB-s$i" addr add "2001:db8:19::1$i/64" dev eth1 nodad
done
ip -n "$LAB-in" addr add "$INSIDE6/64" dev eth0 nodad
ip -n "$LAB-in" -6 route add fd00:8::/64 via "$IN_VIP6"

tun_has6() { ip -n "$LAB-s$1" -6 addr show dev tun0 | grep -q "inet6 fd00:8::1/64"; }
tunnel_ip6() { ip -n "$LAB-c$1" -6 addr show tun0 scope global 2>/dev/null | awk '/inet6 /{print $2}'; }
# The Virtual IPv6 column of `show clients` (the fifth) for alice on s$1.
ctl_ip6() { ha_ctl "$1" show clients | awk '$1 == "alice" {print $5}'; }
ping6_inside() { ip netns exec "$LAB-c$1" ping -6 -c "${2:-3}" -i 0.2 -W 1 "$INSIDE6" >/dev/null 2>&1; }

for i in 1 2; do check "s$i gives tun0 fd00:8::1/64" tun_has6 $i; done
ha_start_client 1 alice
check "alice connects through the VIP" wait_for 20 ha_connected 1 || ha_explain
check "alice was pushed ifconfig-ipv6 fd00:8::2/64 fd00:8::1" \
	has_line "$LAB_TMP/c1.log" "ifconfig-ipv6 fd00:8::2/64 fd00:8::1"
IP6=$(tunnel_ip6 1)
check "alice's tun0 has fd00:8::2/64 (has: $IP6)" test "$IP6" = "fd00:8::2/64"
check "alice pings the inside host's $INSIDE6 through the tunnel" wait_for 10 ping6_inside 1
check "show clients on s$M lists alice at fd00:8::2 (has: $(ctl_ip6 "$M"))" test "$(ctl_ip6 "$M")" = fd00:8::2
check "the backup s$B holds alice's session" wait_for 5 has_line "$(ha_log "$B")" "ghost alice .*installed"

ha_cut_master
T_PING=$EPOCHREALTIME
check "alice pings $INSIDE6 again after the failover" wait_for 30 ping6_inside 1 2
say "IPv6 answered again $(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s after the power cut (ping started at +$(awk -v a="$T_FAIL" -v b="$T_PING" 'BEGIN{printf "%.2f", b-a}') s)"
check "alice reaches the inside host over IPv4 too" \
	ip netns exec "$LAB-c1" ping -c 2 -i 0.2 -W 1 -q "$INSIDE_IP" >/dev/null
check_no_restart 1 alice
check "alice keeps fd00:8::2/64 (now $(tunnel_ip6 1))" test "$(tunnel_ip6 1)" = "fd00:8::2/64"
check "show clients on the new master s$B lists alice at fd00:8::2 (has: $(ctl_ip6 "$B"))" test "$(ctl_ip6 "$B")" = fd00:8::2
summary
