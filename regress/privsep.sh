#!/usr/bin/env bash
# The daemon's process model, proven on a running daemon: four processes,
# each child unprivileged, chrooted, without capabilities, with no_new_privs
# and a seccomp filter, holding exactly the descriptors it was given; the
# control socket root-only; reload; clean shutdown; a child killed with
# SIGKILL takes the whole daemon down with a log line that names it; and a
# child that makes a forbidden system call is killed by its filter, which
# demotes the node; a stopped child, or a stopped parent, is found by the
# heartbeats within the watchdog time.
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

# A cluster member's configuration (demotion needs a sync block): its VIP
# on a dummy interface of the namespace, one peer that never answers.
DUMMY=vsd-priv-dum
DEMOTE=$LAB_TMP/demote
write_sync_conf() {
	write_conf
	cat >>"$CONF" <<-EOC
		sync {
			role vip 10.250.0.10 interface $DUMMY
			peer 10.250.0.2 port 1196
			key "$LAB_TMP/pki/sync.key"
			member 1
			demote file "$DEMOTE" value 77
		}
	EOC
}

# start_daemon: the daemon starts with two extra descriptors inherited from
# its caller (10 and 251), which must not reach any child.
start_daemon() {
	: >"$LOG"
	ip netns exec $NS "$VPNSYNCD" -d -v -f "$CONF" </dev/null >/dev/null 2>"$LOG" 10</dev/null 251</dev/null &
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

# child_pid FLAG: the daemon's child started with FLAG (-E, -S or -C).
child_pid() {
	local k
	for k in $(pgrep -P "$DAEMON"); do has_flag "$k" "$1" && echo "$k"; done
}

# fd_names PID: one word per open descriptor of PID, sorted: the path of a
# file or device, or the kind of socket (udp, netlink, unix, unix:PATH).
fd_names() {
	local pid=$1 fd t ino path
	for fd in /proc/"$pid"/fd/*; do
		t=$(readlink "$fd") || continue
		case $t in
		socket:\[*\])
			ino=${t#socket:[}
			ino=${ino%]}
			if awk -v i="$ino" '$10 == i { f = 1 } END { exit !f }' /proc/"$pid"/net/udp /proc/"$pid"/net/udp6; then
				echo udp
			elif awk -v i="$ino" '$10 == i { f = 1 } END { exit !f }' /proc/"$pid"/net/netlink; then
				echo netlink
			elif path=$(awk -v i="$ino" '$7 == i { print $8; f = 1 } END { exit !f }' /proc/"$pid"/net/unix); then
				echo "unix${path:+:$path}"
			else
				echo "socket"
			fi
			;;
		*) echo "$t" ;;
		esac
	done | sort | tr '\n' ' ' | sed 's/ $//'
}

# child_fds_are FLAG WORD...: the child's descriptors are exactly WORDs
# (stdin and stdout /dev/null, stderr the log, fd 3 the parent channel, and
# what the parent sent it).
child_fds_are() {
	local flag=$1 pid want have
	shift
	pid=$(child_pid "$flag")
	want=$(printf '%s\n' /dev/null /dev/null "$LOG" "$@" | sort | tr '\n' ' ' | sed 's/ $//')
	have=$(fd_names "$pid")
	[ "$have" = "$want" ] || { say "  child $flag (pid $pid) fds: $have; expected: $want"; return 1; }
}

# settled COMMAND...: COMMAND succeeds within 3 s (a control connection may
# still be closing); on failure its last run says why.
settled() { wait_for 3 "$@" || "$@"; }

# forbidden_syscall_kills NAME FLAG: a daemon whose child NAME is armed with
# the test trigger; the child dies of its filter at the next Verbose, the
# parent names it, demotes and exits 1.
forbidden_syscall_kills() {
	local name=$1 flag=$2 pid rc
	write_sync_conf
	rm -f "$DEMOTE"
	export VPNSYNCD_TEST_FORBIDDEN_SYSCALL=$name
	start_daemon
	unset VPNSYNCD_TEST_FORBIDDEN_SYSCALL
	check "$name armed: the demotion is lifted once the table is complete (alone after 3 s)" \
		wait_for 10 grep -qx 0 "$DEMOTE"
	pid=$(child_pid "$flag")
	"$VPNSYNCCTL" -s "$SOCK" log verbose >/dev/null 2>&1
	wait_for 10 bash -c "! kill -0 $DAEMON"
	wait "$DAEMON"
	rc=$?
	check "$name (pid $pid): a forbidden ptrace(2) kills it (SIGSYS)" \
		grep -q "$name (pid $pid) killed by signal 31 (SIGSYS)" "$LOG"
	check "$name: the parent demoted the node (demote file holds 77)" grep -qx 77 "$DEMOTE"
	check "$name: the parent exits 1 (status $rc)" test "$rc" -eq 1
}

# A standalone daemon with `watchdog 2` (standalone, so that it runs where
# the dummy interface of a cluster member cannot be made; the demotion of
# a hung master is failover.sh's case 11).
WATCHDOG=2
start_watched() {
	write_conf
	echo "watchdog $WATCHDOG" >>"$CONF"
	check "$1: the daemon starts" start_daemon
}

# elapsed_at_most T0 MAX: fewer than MAX seconds since the EPOCHREALTIME T0.
elapsed_at_most() { awk -v a="$1" -v b="$EPOCHREALTIME" -v m="$2" 'BEGIN { exit !(b - a <= m) }'; }

# A stopped engine (SIGSTOP) keeps its descriptors: only the heartbeats
# show it. The parent must name it and exit 1 (as on a child's death,
# which demotes) within the watchdog time (plus a heartbeat).
a_stopped_child_takes_the_node_down() {
	local label="stopped engine" pid t0 rc
	start_watched "$label"
	pid=$(child_pid -E)
	t0=$EPOCHREALTIME
	kill -STOP "$pid"
	wait_for 10 bash -c "! kill -0 $DAEMON"
	check "$label: the daemon went down within $((WATCHDOG + 1)) s" elapsed_at_most "$t0" $((WATCHDOG + 1))
	wait "$DAEMON"
	rc=$?
	check "$label: the parent names it" grep -q "engine (pid $pid) has not answered a heartbeat for .* (watchdog $WATCHDOG s): it is hung; demoting and stopping" "$LOG"
	check "$label: the parent exits 1 (status $rc)" test "$rc" -eq 1
	check "$label: the engine is gone, and its tun device" bash -c "! kill -0 $pid 2>/dev/null && ! ip -n $NS link show $DEV 2>/dev/null"
}

# A stopped parent: every child exits within the watchdog time (the
# engine's exit removes the tun device, which keepalived tracks); the
# parent, continued, finds them gone and exits 1.
a_stopped_parent_takes_the_node_down() {
	local label="stopped parent" t0 rc
	start_watched "$label"
	t0=$EPOCHREALTIME
	kill -STOP "$DAEMON"
	check "$label: the tun device is gone within $((WATCHDOG + 1)) s" \
		wait_for $((WATCHDOG + 3)) bash -c "! ip -n $NS link show $DEV >/dev/null 2>&1"
	check "$label: ... and it went within $((WATCHDOG + 1)) s" elapsed_at_most "$t0" $((WATCHDOG + 1))
	# Exited children stay zombies until the stopped parent reaps them.
	check "$label: no child runs any more" wait_for 3 bash -c "test -z \"\$(ps -o stat= --ppid $DAEMON | grep -v '^Z')\""
	# The first child to see it exits; the others may see that first.
	check "$label: a child says why" \
		grep -Eq "^(engine|syncer|carpwatch): no heartbeat from the parent for .* \(watchdog $WATCHDOG s\): the parent is hung" "$LOG"
	kill -CONT "$DAEMON"
	wait_for 10 bash -c "! kill -0 $DAEMON"
	wait "$DAEMON"
	rc=$?
	check "$label: continued, the parent names the dead engine" grep -q "^parent: engine (pid [0-9]*) exited with status 1" "$LOG"
	check "$label: the parent exits 1 (status $rc)" test "$rc" -eq 1
}

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
	[ -n "$pid" ] && check "child $flag (pid $pid): Seccomp: 2 (filter mode)" test "$(status_field "$pid" Seccomp)" = 2
	[ -n "$pid" ] && check "child $flag is named ${COMM[$flag]} ($(cat /proc/$pid/comm))" test "$(cat /proc/$pid/comm)" = "${COMM[$flag]}"
done
check "the parent holds the inherited descriptors 10 and 251" test -e /proc/$DAEMON/fd/10 -a -e /proc/$DAEMON/fd/251
check "engine fds: parent channel, tun, listener, control socket, syncer channel, the data threads' wake-up pair" \
	settled child_fds_are -E unix /dev/net/tun udp "unix:$SOCK" unix unix unix
check "syncer fds: parent channel, engine channel (standalone: no sync socket)" settled child_fds_are -S unix unix
check "carpwatch fds: parent channel (standalone: no route socket)" settled child_fds_are -C unix
check "control socket is 0600 root" test "$(stat -c '%a %U' "$SOCK")" = "600 root"
check "tun device has the server address" bash -c "ip -n $NS -4 addr show $DEV | grep -q 'inet 10.8.0.1/24'"

# Standalone, carpwatch reports MASTER at once; the role reaches the engine
# through the parent, a moment after the control socket answers.
check "show summary: standalone master" wait_for 5 bash -c "'$VPNSYNCCTL' -s '$SOCK' show summary | grep -q 'role MASTER'"
OUT=$("$VPNSYNCCTL" -s "$SOCK" show summary)
say "$OUT"
check "show summary: clients of max" grep -q '^Clients:  0 of 16, 0 of other members$' <<<"$OUT"
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
check "non-root vpnsyncctl is refused by the engine's credential check, with the reason ($OUT)" \
	test $RC -ne 0 -a "$OUT" = "vpnsyncctl: permission denied: the control socket accepts root only"
check "the refusal is logged with the uid" wait_for 3 grep -q "refused a connection from uid $(id -u nobody)" "$LOG"

write_conf 32
OUT=$("$VPNSYNCCTL" -s "$SOCK" reload)
check "vpnsyncctl reload applies a new configuration" bash -c "grep -q reloaded <<<'$OUT' && '$VPNSYNCCTL' -s '$SOCK' show summary | grep -q '^Clients:  0 of 32, 0 of other members$'"
echo 'data-ciphers aes-256-cbcx' >>"$CONF"
BAD_LINE=$(wc -l <"$CONF")
OUT=$("$VPNSYNCCTL" -s "$SOCK" reload 2>&1); RC=$?
say "$OUT"
check "vpnsyncctl reload refuses an invalid configuration with file:line:col" test $RC -eq 1 -a -n "$(grep -F "$CONF:$BAD_LINE:14: unknown cipher \"aes-256-cbcx\"" <<<"$OUT")"
kill -HUP "$DAEMON"
check "SIGHUP with an invalid configuration is logged" wait_for 3 grep -q "reload refused" "$LOG"
check "the daemon keeps running on the old configuration" bash -c "'$VPNSYNCCTL' -s '$SOCK' show summary | grep -q '^Clients:  0 of 32, 0 of other members$'"
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

# A cluster member: the sync socket and the route socket reach their child.
ip -n $NS link add $DUMMY type dummy
ip -n $NS addr add 10.250.0.1/24 dev $DUMMY
ip -n $NS addr add 10.250.0.10/32 dev $DUMMY
ip -n $NS link set $DUMMY up
write_sync_conf
check "cluster member starts" start_daemon
check "syncer fds: parent channel, engine channel, sync socket" settled child_fds_are -S unix unix udp
check "carpwatch fds: parent channel, route socket" settled child_fds_are -C unix netlink
for flag in -E -S -C; do
	check "cluster member: child $flag has Seccomp: 2" test "$(status_field "$(child_pid $flag)" Seccomp)" = 2
done
kill -TERM "$DAEMON"
wait "$DAEMON"
forbidden_syscall_kills engine -E
forbidden_syscall_kills syncer -S
forbidden_syscall_kills carpwatch -C
a_stopped_child_takes_the_node_down
a_stopped_parent_takes_the_node_down
say "--- daemon log (last run) ---"
tail -n 20 "$LOG" >&2
summary
