#!/usr/bin/env bash
# `password pam` with stock OpenVPN 2.6 clients (auth-user-pass) in the HA
# lab: two servers under keepalived, a throwaway system user and a PAM
# service of the lab's own (/etc/pam.d/vpnsyncd-lab: pam_unix auth and
# account, and a pam_exec line that counts the auth calls), both removed
# on exit even when a check fails.
#
#   1  the user's right password: accepted by PAM, connected, the user shown
#      by `vpnsyncctl show clients`; a wrong password (client 2):
#      AUTH_FAILED at the client, no tunnel, the refusal logged with PAM's
#      words and without the password
#   2  with `password token lifetime 60`: a power cut of the master, then at
#      least 5 renegotiations (reneg-sec 3) on the new master, and the
#      session past 75 s, longer than a token lives: PAM was asked once in
#      all (each renegotiation renewed the token), the client never
#      restarted
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived useradd chpasswd userdel

PAM_SERVICE=vpnsyncd-lab
PAM_FILE=/etc/pam.d/$PAM_SERVICE
LAB_USER=vsdpam$$
GOOD=Lab-good-$$
BAD=Lab-wrong-$$
CALLS=$LAB_TMP/pam-calls

# What the lab adds to the system goes, whatever happens; then lib.sh's
# own clean-up. A TERM (timeout) or INT exits, so that the EXIT trap runs.
pam_cleanup() {
	rm -f "$PAM_FILE"
	id "$LAB_USER" >/dev/null 2>&1 && userdel "$LAB_USER" 2>/dev/null
	lab_cleanup
}
trap pam_cleanup EXIT
trap 'exit 143' TERM INT

[ -e "$PAM_FILE" ] && { say "FATAL: $PAM_FILE exists (another run?)"; exit 2; }
useradd -M -d /nonexistent -s /usr/sbin/nologin -c "vpnsyncd PAM lab" "$LAB_USER" ||
	{ say "FATAL: useradd $LAB_USER"; exit 2; }
echo "$LAB_USER:$GOOD" | chpasswd || { say "FATAL: chpasswd"; exit 2; }
COUNT=$LAB_TMP/pam-count
cat >"$COUNT" <<EOS
#!/bin/sh
echo "\$PAM_TYPE \$PAM_USER \$PAM_SERVICE" >>"$CALLS"
EOS
chmod 755 "$COUNT"
cat >"$PAM_FILE" <<EOP
# vpnsyncd regress/auth-pam.sh (removed when it ends)
auth	optional	pam_exec.so quiet $COUNT
auth	required	pam_unix.so
account	required	pam_unix.so
EOP

make_pki "$PKI"
printf '%s\n%s\n' "$LAB_USER" "$GOOD" >"$LAB_TMP/good.up"
printf '%s\n%s\n' "$LAB_USER" "$BAD" >"$LAB_TMP/bad.up"
chmod 600 "$LAB_TMP"/*.up

calls() { [ -f "$CALLS" ] && grep -c "^auth $LAB_USER $PAM_SERVICE\$" "$CALLS" || echo 0; }
has_line() { grep -Eq "$2" "$1"; }
handshakes_since() {
	awk -v t="$2" '/ Control Channel: TLS/ && $1 + 0 > t { n++ } END { print n + 0 }' "$LAB_TMP/c$1.log"
}
renegotiated_for() { [ "$(handshakes_since "$1" "$2")" -ge "$3" ] && [ $SECONDS -ge "$4" ]; }
taken_over() { local m; m=$(master_of); [ -n "$m" ] && [ "$m" != "$1" ] && ha_settled; }
ping_inside() { ip netns exec "$LAB-c$1" ping -c 3 -i 0.2 -W 1 "$INSIDE_IP" >/dev/null 2>&1; }
no_password_logged() { ! grep -lF -e "$GOOD" -e "$BAD" "$LAB_TMP"/s*/vpnsyncd.log; }

case_pam() {
	local label=1 m
	HA_CONF_EXTRA="password pam service $PAM_SERVICE timeout 10"
	ha_lab 2 2 || { not_ok "$label: the lab starts"; ha_teardown; return; }
	HA_CONF_EXTRA=""
	m=$(master_of)
	ha_start_client 1 alice "auth-user-pass $LAB_TMP/good.up"
	ha_start_client 2 bob "auth-user-pass $LAB_TMP/bad.up"
	check "$label: the right password connects" wait_for 20 ha_connected 1 || ha_explain
	check "$label: client 1 reaches the inside host" ping_inside 1
	check "$label: show clients names the user $LAB_USER" has_line <(ha_ctl "$m" show clients) "alice +$LAB_USER "
	check "$label: the wrong password gets AUTH_FAILED" wait_for 20 has_line "$LAB_TMP/c2.log" "AUTH_FAILED"
	check "$label: client 2 has no tunnel" test -z "$(tunnel_ip 2)"
	check "$label: the master logged PAM's acceptance" \
		has_line "$(ha_log "$m")" "password check: user \"$LAB_USER\" from .* accepted \(PAM service $PAM_SERVICE: accepted\)"
	check "$label: the master logged the refusal with the user and PAM's error" \
		has_line "$(ha_log "$m")" "password check: user \"$LAB_USER\" from .* refused \(PAM service $PAM_SERVICE: pam_authenticate: Authentication failure\)"
	check "$label: no password in any server log" no_password_logged
	check "$label: PAM's auth stack ran for each client ($(calls) calls)" test "$(calls)" -ge 2
	ha_teardown
	rm -f "$CALLS"
}

case_token() {
	local label=2 old t_fail n until
	HA_CONF_EXTRA="password pam service $PAM_SERVICE
password token lifetime 60
reneg-sec 3" HA_SYNC_EXTRA="rekey-window 2"
	ha_lab 2 1 || { not_ok "$label: the lab starts"; ha_teardown; return; }
	HA_CONF_EXTRA="" HA_SYNC_EXTRA=""
	ha_start_client 1 alice "auth-user-pass $LAB_TMP/good.up"
	check "$label: connected" wait_for 20 ha_connected 1 || { ha_explain; ha_teardown; return; }
	until=$((SECONDS + 75))
	check "$label: the client got an auth-token in its push reply" wait_for 5 has_line "$LAB_TMP/c1.log" "auth-token"
	old=$(master_of)
	wait_for 10 has_line "$(ha_log "$((3 - old))")" "ghost .*installed"
	sleep 1
	t_fail=$EPOCHREALTIME
	power_cut "$old"
	check "$label: s$((3 - old)) takes over" wait_for 15 taken_over "$old" || ha_explain
	wait_for 90 renegotiated_for 1 "$t_fail" 6 "$until"
	n=$(handshakes_since 1 "$t_fail")
	check "$label: at least 5 renegotiations after the takeover ($n)" test "$n" -ge 6
	check "$label: the session outlived the token lifetime (75 s >= 60 s)" test $SECONDS -ge "$until"
	check "$label: PAM was asked exactly once ($(calls) calls)" test "$(calls)" = 1
	check "$label: the client never restarted" bash -c "! grep -Eq 'AUTH_FAILED|SIGUSR1|Restart pause' $LAB_TMP/c1.log"
	check "$label: one Initialization Sequence Completed" \
		test "$(grep -c "Initialization Sequence Completed" "$LAB_TMP/c1.log")" = 1
	check "$label: the client reaches the inside host" ping_inside 1
	check "$label: no password in any server log" no_password_logged
	ha_teardown
}

T_ALL=$SECONDS
case_pam
case_token
say "all cases: $((SECONDS - T_ALL)) s"
summary
