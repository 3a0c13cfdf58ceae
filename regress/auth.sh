#!/usr/bin/env bash
# Username/password authentication with stock OpenVPN 2.6 clients
# (auth-user-pass) in the HA lab: two servers under keepalived, the
# `password script` and `password token` of vpnsyncd.conf(5).
#
#   1  bob's right password: accepted by the script, connected, the user
#      shown by `vpnsyncctl show clients`; a wrong password (client 2):
#      AUTH_FAILED at the client, no tunnel, the refusal logged without the
#      password
#   2  with the token: a power cut of the master, then at least 5
#      renegotiations (reneg-sec 3) on the new master: the script ran once
#      in all, the client never restarted
#   3  verify-client-cert none: a client without cert/key, admitted by its
#      password alone, shown as UNDEF; without the password, AUTH_FAILED
#
# PAM has its own lab (regress/auth-pam.sh); BSD Authentication is OpenBSD's
# and only compiled here.
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived

make_pki "$PKI"
CALLS=$LAB_TMP/calls
SCRIPT=$LAB_TMP/checkpw
# The OpenVPN via-file convention: username and password on two lines of
# the file named last; each call leaves a line in $CALLS.
cat >"$SCRIPT" <<EOS
#!/bin/sh
echo "\$script_type \$username \$common_name" >>"$CALLS"
u=\$(sed -n 1p "\$1"); p=\$(sed -n 2p "\$1")
[ "\$u" = bob ] && [ "\$p" = goodpw ] && exit 0
exit 1
EOS
chmod 755 "$SCRIPT"
printf 'bob\ngoodpw\n' >"$LAB_TMP/good.up"
printf 'bob\nwrongpw\n' >"$LAB_TMP/bad.up"
chmod 600 "$LAB_TMP"/*.up

calls() { [ -f "$CALLS" ] && wc -l <"$CALLS" || echo 0; }
handshakes_since() {
	awk -v t="$2" '/ Control Channel: TLS/ && $1 + 0 > t { n++ } END { print n + 0 }' "$LAB_TMP/c$1.log"
}
handshakes_after() { [ "$(handshakes_since "$1" "$2")" -ge "$3" ]; }

case_script() {
	local label=1
	HA_CONF_EXTRA="password script \"$SCRIPT\" timeout 5"
	ha_pair 2 "$label: " || { ha_teardown; return; }
	ha_start_client 1 alice "auth-user-pass $LAB_TMP/good.up"
	ha_start_client 2 bob "auth-user-pass $LAB_TMP/bad.up"
	check "$label: the right password connects" wait_for 20 ha_connected 1 || ha_explain
	check "$label: client 1 reaches the inside host" ping_inside 1
	check "$label: show clients names the user bob" has_line <(ha_ctl "$M" show clients) "bob"
	check "$label: the wrong password gets AUTH_FAILED" wait_for 20 has_line "$LAB_TMP/c2.log" "AUTH_FAILED"
	check "$label: client 2 has no tunnel" test -z "$(tunnel_ip 2)"
	check "$label: the master logged the refusal with user, peer and cause" \
		has_line "$(ha_log "$M")" 'password check: user "bob" from .* refused \(script exit 1\)'
	check "$label: no password in any server log" bash -c "! grep -l 'goodpw\|wrongpw' $LAB_TMP/s*/vpnsyncd.log"
	check "$label: the script saw script_type, username and common name" \
		has_line "$CALLS" "^user-pass-verify bob alice$"
	check "$label: no credential file is left" bash -c "! ls -A /var/run/vpnsyncd-auth 2>/dev/null | grep -q ."
	HA_CONF_EXTRA=""
	ha_teardown
	rm -f "$CALLS"
}

case_token() {
	local label=2 n
	HA_CONF_EXTRA="password script \"$SCRIPT\"
password token lifetime 600
reneg-sec 3" HA_SYNC_EXTRA="rekey-window 2"
	ha_pair 1 "$label: " || { ha_teardown; return; }
	HA_CONF_EXTRA="" HA_SYNC_EXTRA=""
	ha_start_client 1 alice "auth-user-pass $LAB_TMP/good.up"
	check "$label: connected" wait_for 20 ha_connected 1 || { ha_explain; ha_teardown; return; }
	check "$label: the client got an auth-token in its push reply" wait_for 5 has_line "$LAB_TMP/c1.log" "auth-token"
	wait_for 10 has_line "$(ha_log "$B")" "ghost .*installed"
	sleep 1
	ha_cut_master "$label: "
	wait_for 40 handshakes_after 1 "$T_FAIL" 6
	n=$(handshakes_since 1 "$T_FAIL")
	check "$label: at least 5 renegotiations after the takeover ($n)" test "$n" -ge 6
	check "$label: the script ran exactly once ($(calls) calls)" test "$(calls)" = 1
	check "$label: the client never restarted" bash -c "! grep -Eq 'AUTH_FAILED|SIGUSR1|Restart pause' $LAB_TMP/c1.log"
	check "$label: one Initialization Sequence Completed" \
		test "$(grep -c "Initialization Sequence Completed" "$LAB_TMP/c1.log")" = 1
	check "$label: the client reaches the inside host" ping_inside 1
	ha_teardown
}

# certless_client N UPFILE: stock openvpn on client N without cert/key.
certless_client() {
	local n=$1
	client_conf alice "$PKI" "tls-auth $PKI/ta.key 1" "auth-user-pass $2" | grep -Ev '^(cert|key) ' >"$LAB_TMP/c$n.ovpn"
	: >"$LAB_TMP/c$n.log"
	ip netns exec "$LAB-c$n" openvpn --config "$LAB_TMP/c$n.ovpn" --suppress-timestamps \
		> >(stamp >>"$LAB_TMP/c$n.log") 2>&1 &
	LAB_PIDS+=("$!")
	disown $!
}

case_certless() {
	local label=3
	HA_CONF_EXTRA="password script \"$SCRIPT\"
verify-client-cert none"
	ha_pair 2 "$label: " || { ha_teardown; return; }
	HA_CONF_EXTRA=""
	certless_client 1 "$LAB_TMP/good.up"
	certless_client 2 "$LAB_TMP/bad.up"
	check "$label: a client without certificate connects with its password" wait_for 20 ha_connected 1 || ha_explain
	check "$label: it reaches the inside host" ping_inside 1
	check "$label: show clients lists it as UNDEF, user bob" has_line <(ha_ctl "$M" show clients) "^UNDEF +bob "
	check "$label: the wrong password gets AUTH_FAILED" wait_for 20 has_line "$LAB_TMP/c2.log" "AUTH_FAILED"
	check "$label: client 2 has no tunnel" test -z "$(tunnel_ip 2)"
	ha_teardown
	rm -f "$CALLS"
}

T_ALL=$SECONDS
case_script
case_token
case_certless
say "all cases: $((SECONDS - T_ALL)) s"
summary
