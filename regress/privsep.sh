#!/usr/bin/env bash
# The daemon's process model, proven on a running daemon: four processes,
# each child unprivileged, chrooted, without capabilities and with
# no_new_privs; the control socket root-only; reload; clean shutdown; and a
# child killed with SIGKILL takes the whole daemon down with a log line that
# names it.
. "$(dirname "$0")/lib.sh"
need_root
ensure_user

NS=vs-privsep
DEV=vsd-priv0
SOCK=$LAB_TMP/vpnsyncd.sock
CONF=$LAB_TMP/vpnsyncd.conf
LOG=$LAB_TMP/daemon.log
make_pki "$LAB_TMP/pki"
lab_netns $NS

write_conf() {
	cat >"$CONF" <<-EOC
		# privsep lab
		pki = "$LAB_TMP/pki"
		listen on 127.0.0.1 port 1194
		tun device $DEV
		client network 10.8.0.0/24
		max clients ${1:-16}
		ca "\$pki/ca.crt"
		certificate "\$pki/server.crt"
		key "\$pki/server.key"
		crl "\$pki/crl.pem"
		tls-auth "\$pki/ta.key" direction 0
		socket "$SOCK"
	EOC
}

start_daemon() {
	: >"$LOG"
	ip netns exec $NS "$VPNSYNCD" -d -v -f "$CONF" 2>"$LOG" &
	DAEMON=$!
	LAB_PIDS+=("$DAEMON")
	wait_for 10 test -S "$SOCK" && wait_for 5 "$VPNSYNCCTL" -s "$SOCK" show summary >/dev/null
}

# status_field PID FIELD: the value of FIELD in /proc/PID/status, tabs kept.
status_field() { awk -F'\t' -v k="$2:" '$1 == k { sub(/^[^\t]*\t/, ""); sub(/ +$/, ""); print }' "/proc/$1/status"; }

child_is_confined() {
	local pid=$1 uid gid
	uid=$(id -u _vpnsyncd)
	gid=$(id -g _vpnsyncd)
	[ "$(status_field "$pid" Uid)" = "$uid	$uid	$uid	$uid" ] || { say "  pid $pid Uid: $(status_field "$pid" Uid)"; return 1; }
	[ "$(status_field "$pid" Gid)" = "$gid	$gid	$gid	$gid" ] || { say "  pid $pid Gid: $(status_field "$pid" Gid)"; return 1; }
	[ "$(status_field "$pid" Groups)" = "$gid" ] || { say "  pid $pid Groups: $(status_field "$pid" Groups)"; return 1; }
	local c
	for c in CapInh CapPrm CapEff CapBnd CapAmb; do
		[ "$(status_field "$pid" $c)" = 0000000000000000 ] || { say "  pid $pid $c: $(status_field "$pid" $c)"; return 1; }
	done
	[ "$(status_field "$pid" NoNewPrivs)" = 1 ] || { say "  pid $pid NoNewPrivs: $(status_field "$pid" NoNewPrivs)"; return 1; }
	[ "$(readlink "/proc/$pid/root")" = /var/empty ] || { say "  pid $pid root: $(readlink "/proc/$pid/root")"; return 1; }
	[ -z "$(ls -A /var/empty)" ] || { say "  /var/empty is not empty"; return 1; }
}

has_flag() { tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- " $2 "; }

write_conf
check "vpnsyncd refuses to start without root" \
	bash -c "setpriv --reuid=nobody --regid=nogroup --clear-groups '$VPNSYNCD' -d -f '$CONF' 2>&1 | grep -qx 'vpnsyncd: need root privileges'"

check "daemon starts and answers on the control socket" start_daemon
sleep 0.3
mapfile -t KIDS < <(pgrep -P "$DAEMON")
check "parent has three children (four processes)" test "${#KIDS[@]}" -eq 3
check "parent runs as root" test "$(status_field "$DAEMON" Uid | cut -f1)" = 0
check "parent's command name is vpnsyncd" test "$(cat /proc/$DAEMON/comm)" = vpnsyncd
# The command name each child sets (prctl PR_SET_NAME): what ps -e shows.
declare -A COMM=([-E]=vpnsyncd-engine [-S]=vpnsyncd-syncer [-C]=vpnsyncd-carp)
for flag in -E -S -C; do
	pid=""
	for k in "${KIDS[@]}"; do has_flag "$k" $flag && pid=$k; done
	check "child $flag exists" test -n "$pid"
	[ -n "$pid" ] && check "child $flag (pid $pid): uid/gid _vpnsyncd, no capabilities, no_new_privs, root /var/empty" child_is_confined "$pid"
	[ -n "$pid" ] && check "child $flag is named ${COMM[$flag]} ($(cat /proc/$pid/comm))" test "$(cat /proc/$pid/comm)" = "${COMM[$flag]}"
done
check "control socket is 0600 root" test "$(stat -c '%a %U' "$SOCK")" = "600 root"
check "tun device has the server address" bash -c "ip -n $NS -4 addr show $DEV | grep -q 'inet 10.8.0.1/24'"

# Standalone, carpwatch reports MASTER at once; the role reaches the engine
# through the parent, a moment after the control socket answers.
check "show summary: standalone master" wait_for 5 bash -c "'$VPNSYNCCTL' -s '$SOCK' show summary | grep -q 'role MASTER'"
OUT=$("$VPNSYNCCTL" -s "$SOCK" show summary)
say "$OUT"
check "show summary: clients of max" grep -q '^Clients:  0 of 16$' <<<"$OUT"
check "show summary -j is JSON" bash -c "'$VPNSYNCCTL' -j -s '$SOCK' show summary | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"role\"]==\"MASTER\" and d[\"tun_device\"]==\"$DEV\"'"
OUT=$("$VPNSYNCCTL" -s "$SOCK" show clients)
check "show clients: the engine's (empty) table" test "$(wc -l <<<"$OUT")" -eq 1 -a "$(awk '{print $1, $2}' <<<"$OUT")" = "Common Name"
check "show sync: from the syncer" bash -c "'$VPNSYNCCTL' -s '$SOCK' show sync | grep -q '^Transport:  standalone'"
check "abbreviated command (s s is ambiguous, s su works)" bash -c "! '$VPNSYNCCTL' -s '$SOCK' s s 2>/dev/null && '$VPNSYNCCTL' -s '$SOCK' s su >/dev/null"
OUT=$("$VPNSYNCCTL" -s "$SOCK" kill client nobody 2>&1); RC=$?
check "kill client nobody: exit 1 with a message" test $RC -eq 1 -a "$OUT" = 'vpnsyncctl: no client with common name "nobody"'
check "log verbose" bash -c "'$VPNSYNCCTL' -s '$SOCK' log verbose | grep -qx 'logging verbose'"

OUT=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$VPNSYNCCTL" -s "$SOCK" show summary 2>&1); RC=$?
check "non-root vpnsyncctl is refused by the socket mode ($OUT)" test $RC -ne 0 -a -n "$(grep 'Permission denied' <<<"$OUT")"
chmod 666 "$SOCK"
OUT=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$VPNSYNCCTL" -s "$SOCK" show summary 2>&1); RC=$?
chmod 600 "$SOCK"
check "non-root vpnsyncctl is refused by the engine's credential check ($OUT)" test $RC -ne 0
check "the refusal is logged with the uid" wait_for 3 grep -q "refused a connection from uid $(id -u nobody)" "$LOG"

write_conf 32
OUT=$("$VPNSYNCCTL" -s "$SOCK" reload)
check "vpnsyncctl reload applies a new configuration" bash -c "grep -q reloaded <<<'$OUT' && '$VPNSYNCCTL' -s '$SOCK' show summary | grep -q '^Clients:  0 of 32$'"
echo 'data-ciphers aes-256-cbcx' >>"$CONF"
BAD_LINE=$(wc -l <"$CONF")
OUT=$("$VPNSYNCCTL" -s "$SOCK" reload 2>&1); RC=$?
say "$OUT"
check "vpnsyncctl reload refuses an invalid configuration with file:line:col" test $RC -eq 1 -a -n "$(grep -F "$CONF:$BAD_LINE:14: unknown cipher \"aes-256-cbcx\"" <<<"$OUT")"
kill -HUP "$DAEMON"
check "SIGHUP with an invalid configuration is logged" wait_for 3 grep -q "reload refused" "$LOG"
check "the daemon keeps running on the old configuration" bash -c "'$VPNSYNCCTL' -s '$SOCK' show summary | grep -q '^Clients:  0 of 32$'"
write_conf 16

ENGINE=""
for k in "${KIDS[@]}"; do has_flag "$k" -E && ENGINE=$k; done
kill -9 "$ENGINE"
wait_for 10 bash -c "! kill -0 $DAEMON"
wait "$DAEMON"
RC=$?
check "parent exits non-zero after a child is killed (status $RC)" test $RC -ne 0
check "the log names the dead child and the signal" grep -q "engine (pid $ENGINE) killed by signal 9 (SIGKILL)" "$LOG"
check "all children are gone" bash -c "for k in ${KIDS[*]}; do ! kill -0 \$k 2>/dev/null || exit 1; done"
check "tun device removed" bash -c "! ip -n $NS link show $DEV 2>/dev/null"
check "control socket removed" test ! -e "$SOCK"

check "daemon starts again" start_daemon
kill -TERM "$DAEMON"
wait "$DAEMON"
RC=$?
check "SIGTERM: clean exit 0" test $RC -eq 0
check "SIGTERM: tun device and socket removed" bash -c "! ip -n $NS link show $DEV 2>/dev/null && test ! -e '$SOCK'"
say "--- daemon log (last run) ---"
tail -n 20 "$LOG" >&2
summary
