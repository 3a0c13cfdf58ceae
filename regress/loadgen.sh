#!/usr/bin/env bash
# The load generator through a failover, for CI: LOADGEN_N (200) clients of
# vpnsyncd-loadgen (each on its own UDP socket, from 20 source addresses of
# client c1, an ICMP echo through its tunnel to the server's tunnel address
# every 0.2 s) against a two-member keepalived cluster (advert_int 0.1),
# then a power cut of the master. Asserts: all N sessions up; the backup
# holds all N (its `show summary` ghosts) before the cut; all N answer
# again after it (the generator's resume count from the cut's time); and
# the generator saw 0 restarts, 0 replays and 0 refusals.
#
# LOADGEN_STOP_SYNCER=1 stops (SIGSTOP) the master's syncer before the
# clients connect, to see the checks fail as they must without the sync.
#
# Usage: regress/loadgen.sh   (as root, after cargo build --workspace)
. "$(dirname "$0")/lib.sh"
lab_start keepalived python3
LOADGEN=${LOADGEN:-$TOP/target/debug/vpnsyncd-loadgen}
[ -x "$LOADGEN" ] || { say "FATAL: build first: cargo build --workspace"; exit 2; }
N=${LOADGEN_N:-200}
OUT=$LAB_TMP/loadgen.out

# summary_field I NAME: a field of server I's `vpnsyncctl -j show summary`
# ("clients": its own sessions, "ghosts": those of other members).
summary_field() {
	ha_ctl "$1" -j show summary 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2" 2>/dev/null
}
holds_all() { [ "$(summary_field "$1" ghosts)" = "$N" ]; }
field() { awk -v k="$1" '$1 == k { print $2 }' "$OUT"; }

ha_lab 2 1 0.1 || { not_ok "the lab came up"; ha_explain; summary; exit 1; }
if [ -n "${LOADGEN_STOP_SYNCER:-}" ]; then
	for p in $(vpnsyncd_pids "$(master_of)"); do
		[ "$(cat "/proc/$p/comm")" = vpnsyncd-syncer ] && kill -STOP "$p" && say "stopped s$(master_of)'s syncer ($p)"
	done
fi
BIND=()
for i in $(seq 1 20); do
	ip -n "$LAB-c1" addr add "198.18.0.$((149 + i))/24" dev eth0
	BIND+=(--bind "198.18.0.$((149 + i))")
done
ip netns exec "$LAB-c1" "$LOADGEN" --remote "$PUB_VIP:1194" --ca "$PKI/ca.crt" \
	--cert "$PKI/alice.crt" --key "$PKI/alice.key" --tls-auth "$PKI/ta.key" \
	-n "$N" --rate 50 --duration 100 --ping-interval 0.2 --ping-to 10.8.0.1 \
	--mark-file "$LAB_TMP/mark" --resume-file "$LAB_TMP/resume" "${BIND[@]}" \
	>"$OUT" 2>"$LAB_TMP/loadgen.err" &
GEN=$!
LAB_PIDS+=("$GEN")

check "all $N loadgen sessions are up" wait_for $((N / 50 + 30)) grep -q '^all_up_seconds' "$OUT"
# The master as the cut finds it: the one the clients' sessions live on.
M=$(master_of)
B=$((3 - M))
check "the master s$M serves all $N sessions" [ "$(summary_field "$M" clients)" = "$N" ]
check "the backup s$B holds all $N sessions before the cut" wait_for 10 holds_all "$B"
say "  s$B holds $(summary_field "$B" ghosts) sessions of other members"
# Echoes flow for a while before the cut: every client is measured.
sleep 2
CUT=$EPOCHREALTIME
power_cut "$M"
echo "$CUT" >"$LAB_TMP/mark.tmp" && mv "$LAB_TMP/mark.tmp" "$LAB_TMP/mark"
check "all $N clients answer again after the power cut of s$M" wait_for 20 grep -q '^all_resumed_seconds' "$OUT"
# A little longer: a replay or a restart that follows the takeover is seen.
sleep 2
kill -TERM "$GEN" 2>/dev/null
wait_for 10 grep -q '^cpu_seconds' "$OUT"
say "loadgen report:"
sed 's/^/  /' "$OUT" >&2
check "the generator measured all $N after the cut (mark_clients $(field mark_clients))" [ "$(field mark_clients)" = "$N" ]
check "all $N resumed (resumed $(field resumed), slowest $(field resume_max_ms) ms)" [ "$(field resumed)" = "$N" ]
check "$N sessions up at the end (sessions_up $(field sessions_up))" [ "$(field sessions_up)" = "$N" ]
check "0 restarts (restarts $(field restarts))" [ "$(field restarts)" = 0 ]
check "0 replays (replays $(field replays))" [ "$(field replays)" = 0 ]
check "0 refusals (refusals $(field refusals))" [ "$(field refusals)" = 0 ]
[ "$FAILED" = 0 ] || { ha_explain; tail -5 "$LAB_TMP/loadgen.err" >&2; }
summary
