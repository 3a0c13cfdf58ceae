# Shared helpers of the vpnsyncd lab tests (sourced, bash).
#
# Every test runs inside network namespaces it creates itself, is bounded in
# time, and removes what it made on exit, also when it fails.

set -u
PATH=$PATH:${HOME:-/root}/.cargo/bin:/root/.cargo/bin
REGRESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$REGRESS_DIR/.." && pwd)
VPNSYNCD=${VPNSYNCD:-$TOP/target/debug/vpnsyncd}
VPNSYNCCTL=${VPNSYNCCTL:-$TOP/target/debug/vpnsyncctl}
PASSED=0
FAILED=0
LAB_NETNS=()
LAB_PIDS=()
LAB_TMP=$(mktemp -d /tmp/vpnsyncd-lab.XXXXXX)
chmod 755 "$LAB_TMP"

say() { printf '%s\n' "$*" >&2; }

# lab_start TOOL...: what a lab needs before it starts: root (and the lab
# lock), the _vpnsyncd user, the given tools and the built binaries.
lab_start() {
	need_root
	ensure_user
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || { say "FATAL: $c is not installed (regress/install-deps)"; exit 2; }
	done
	[ -x "$VPNSYNCD" ] && [ -x "$VPNSYNCCTL" ] || { say "FATAL: build first: cargo build --workspace"; exit 2; }
}

# need_root: lab tests create namespaces and devices; without root they
# cannot run, and say so instead of passing.
need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		say "FATAL: $(basename "$0") needs root (network namespaces, tun devices)."
		say "FATAL: run it as root; CI does."
		exit 2
	fi
	lab_lock
}

# lab_lock: one lab at a time on a machine, since the namespaces have fixed
# names (two runs would delete each other's). A directory is the lock (not
# flock: the daemons a lab starts would inherit its descriptor); a lock
# whose owner died is taken over.
LAB_LOCK=/run/vpnsyncd-lab.lock
lab_lock() {
	local deadline=$((SECONDS + 900)) owner said=""
	while ! mkdir "$LAB_LOCK" 2>/dev/null; do
		owner=$(cat "$LAB_LOCK/pid" 2>/dev/null)
		if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
			rm -rf "$LAB_LOCK"
			continue
		fi
		[ $SECONDS -lt $deadline ] || { say "FATAL: another lab (pid $owner) still runs after 900 s"; exit 2; }
		[ -n "$said" ] || say "waiting for the lab of pid $owner to end"
		said=1
		sleep 1
	done
	echo $$ >"$LAB_LOCK/pid"
}

lab_unlock() {
	[ "$(cat "$LAB_LOCK/pid" 2>/dev/null)" = $$ ] && rm -rf "$LAB_LOCK"
}

ok() { PASSED=$((PASSED + 1)); say "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); say "not ok - $*"; }

# check DESCRIPTION COMMAND...: one assertion.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}

# lab_stop: kills what the lab started and deletes its namespaces.
lab_stop() {
	local p n
	for p in "${LAB_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	for n in "${LAB_NETNS[@]}"; do
		ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$n" 2>/dev/null
	done
	LAB_PIDS=()
	LAB_NETNS=()
}

lab_cleanup() {
	lab_stop
	# LAB_KEEP=DIR keeps the logs and configurations for a post-mortem.
	[ -n "${LAB_KEEP:-}" ] && cp -a "$LAB_TMP" "$LAB_KEEP"
	rm -rf "$LAB_TMP"
	lab_unlock
}
trap lab_cleanup EXIT

# lab_netns NAME: a fresh namespace with loopback up, deleted on exit.
lab_netns() {
	ip netns del "$1" 2>/dev/null
	ip netns add "$1"
	LAB_NETNS+=("$1")
	ip -n "$1" link set lo up
}

# wait_for SECONDS COMMAND...: polls every 0.1 s until COMMAND succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt $deadline ]; do
		"$@" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ensure_user: the unprivileged user the children drop to.
ensure_user() {
	id _vpnsyncd >/dev/null 2>&1 ||
		useradd -r -d /var/empty -s /usr/sbin/nologin -c "vpnsyncd privsep" _vpnsyncd
}

# make_static_key FILE: an "OpenVPN Static key V1" (2048 bits) for
# tls-auth / tls-crypt.
make_static_key() {
	{
		echo "-----BEGIN OpenVPN Static key V1-----"
		od -An -tx1 -N256 /dev/urandom | tr -d ' \n' | fold -w32
		echo
		echo "-----END OpenVPN Static key V1-----"
	} >"$1"
	chmod 600 "$1"
}

# make_pki DIR: a CA with a server certificate, clients alice and bob, a
# revoked client mallory (with a CRL), an expired client old, and a client
# eve of another CA. EC P-256 keys keep it fast.
make_pki() {
	local d=$1 n
	mkdir -p "$d/ca/newcerts" "$d/other"
	: >"$d/ca/index.txt"
	echo 1000 >"$d/ca/serial"
	echo 1000 >"$d/ca/crlnumber"
	cat >"$d/ca/openssl.cnf" <<-CNF
		[ ca ]
		default_ca = lab
		[ lab ]
		dir = $d/ca
		database = \$dir/index.txt
		new_certs_dir = \$dir/newcerts
		serial = \$dir/serial
		crlnumber = \$dir/crlnumber
		certificate = $d/ca.crt
		private_key = $d/ca.key
		default_md = sha256
		default_days = 30
		default_crl_days = 30
		policy = any
		unique_subject = no
		copy_extensions = none
		[ any ]
		commonName = supplied
		[ server ]
		basicConstraints = CA:FALSE
		keyUsage = digitalSignature, keyAgreement
		extendedKeyUsage = serverAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
		[ client ]
		basicConstraints = CA:FALSE
		keyUsage = digitalSignature
		extendedKeyUsage = clientAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	CNF
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=vpnsyncd lab CA" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
	for n in server alice bob mallory old; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n" \
			-keyout "$d/$n.key" -out "$d/$n.csr" 2>/dev/null
	done
	local ext
	for n in server alice bob mallory; do
		ext=client
		[ "$n" = server ] && ext=server
		openssl ca -batch -config "$d/ca/openssl.cnf" -extensions "$ext" -in "$d/$n.csr" \
			-out "$d/$n.crt" -notext 2>/dev/null
	done
	openssl ca -batch -config "$d/ca/openssl.cnf" -extensions client -in "$d/old.csr" \
		-out "$d/old.crt" -notext -startdate 20200101000000Z -enddate 20200201000000Z 2>/dev/null
	openssl ca -config "$d/ca/openssl.cnf" -revoke "$d/mallory.crt" 2>/dev/null
	openssl ca -config "$d/ca/openssl.cnf" -gencrl -out "$d/crl.pem" 2>/dev/null
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=other CA" -keyout "$d/other/ca.key" -out "$d/other/ca.crt" 2>/dev/null
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=eve" -CA "$d/other/ca.crt" -CAkey "$d/other/ca.key" \
		-addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=clientAuth \
		-keyout "$d/eve.key" -out "$d/eve.crt" 2>/dev/null
	make_static_key "$d/ta.key"
	make_static_key "$d/tc.key"
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$d/sync.key"
	chmod 600 "$d"/*.key
}

# summary: the closing line CI reads; exit status follows the failures.
summary() {
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}

# --- The lab network (ARCHITECTURE.md "The lab") ---------------------------
# A switch namespace holds two bridges: public (198.18.0.0/24) and inside
# (198.19.0.0/24). Servers sN sit on both (198.18.0.1N, 198.19.0.1N), clients
# cN on the public one (198.18.0.10N), the inside host on the inside one
# (198.19.0.100). The VIPs are 198.18.0.10 and 198.19.0.1.
LAB=${LAB:-vs}
PUB_VIP=198.18.0.10
IN_VIP=198.19.0.1
INSIDE_IP=198.19.0.100

# lab_link NS BRIDGE IFNAME ADDR/PREFIX: plugs NS into BRIDGE of the switch.
lab_link() {
	local ns=$1 br=$2 ifname=$3 addr=$4 peer
	peer="${ns#"$LAB-"}-$ifname"
	ip link add "$ifname" netns "$ns" type veth peer name "$peer" netns "$LAB-sw"
	ip -n "$LAB-sw" link set "$peer" master "$br" up
	ip -n "$ns" addr add "$addr" dev "$ifname"
	ip -n "$ns" link set "$ifname" up
}

# lab_topology SERVERS CLIENTS: builds the lab (the inside host included).
lab_topology() {
	local i
	lab_netns "$LAB-sw"
	for br in br-pub br-in; do
		ip -n "$LAB-sw" link add "$br" type bridge
		ip -n "$LAB-sw" link set "$br" up
	done
	for i in $(seq 1 "$1"); do
		lab_netns "$LAB-s$i"
		lab_link "$LAB-s$i" br-pub eth0 "198.18.0.1$i/24"
		lab_link "$LAB-s$i" br-in eth1 "198.19.0.1$i/24"
		ip netns exec "$LAB-s$i" sysctl -qw net.ipv4.ip_forward=1
	done
	for i in $(seq 1 "$2"); do
		lab_netns "$LAB-c$i"
		lab_link "$LAB-c$i" br-pub eth0 "198.18.0.10$i/24"
	done
	lab_netns "$LAB-in"
	lab_link "$LAB-in" br-in eth0 "$INSIDE_IP/24"
	# Replies to the tunnel network go back through the inside VIP.
	ip -n "$LAB-in" route add 10.8.0.0/24 via "$IN_VIP"
}

# lab_bench_net CC: for the benchmarks, the lab's own costs made the same on
# every machine. A kernel with br_netfilter built in (or loaded) runs every
# bridged frame through the IPv4/IPv6/ARP netfilter hooks of the switch, in
# the context of the process that sent it (a server's engine too): a cost of
# the lab, not of any host in it, which Debian's default kernel (no
# br_netfilter loaded) does not have. And the senders' TCP congestion
# control must be CC whatever this host's default (this checks that the
# kernel has it; the caller's senders set it): in a download the inside
# host's TCP runs in the context of the server that writes the client's ACKs
# to its tun, so a paced one (bbr arms a timer per burst) is charged there.
#
# And the wire (BENCH_WIRE, 1): a veth hands a frame to its peer's receive
# path in the sender's context, so without it a server's engine pays for the
# switch, the other host's whole network stack (a client's UDP receive, the
# inside host's TCP answering an ACK) and the way back into its own tun. A
# real NIC ends the server's part at the transmit. The switch's ends of the
# servers' links run their receive in a NAPI kernel thread of their own
# (ethtool -K gro on gives a veth NAPI; /sys/class/net/DEV/threaded), whose
# CPU the benchmark prints (napi/...@host); the server still pays for all of
# its own stack up to its transmit. The server's links run with tso off for
# it: a veth hands a TSO device's frames to its peer's NAPI only when they
# come from a local socket, so the server segments forwarded TCP
# super-packets in software, and with a qdisc (pfifo_fast, a NIC's default)
# as a NIC has: a veth without one drops what its peer's NAPI ring (256
# frames) cannot take, where with one it pushes back. BENCH_WIRE=0 keeps the
# old accounting.
lab_bench_net() {
	local nf ns dev peer
	if [ "${BENCH_WIRE:-1}" != 0 ]; then
		command -v ethtool >/dev/null || { say "lab_bench_net: ethtool is missing (regress/install-deps)"; return 1; }
		for ns in "${LAB_NETNS[@]}"; do
			case $ns in "$LAB"-s[0-9]*) ;; *) continue ;; esac
			for dev in eth0 eth1; do
				peer=${ns#"$LAB-"}-$dev
				ip -n "$LAB-sw" link show "$peer" >/dev/null 2>&1 || continue
				ip netns exec "$ns" ethtool -K "$dev" tso off >/dev/null &&
					tc -n "$ns" qdisc replace dev "$dev" root pfifo_fast &&
					ip netns exec "$LAB-sw" ethtool -K "$peer" gro on >/dev/null &&
					ip netns exec "$LAB-sw" sh -c "echo 1 >/sys/class/net/$peer/threaded" ||
					{ say "lab_bench_net: cannot model the wire on $peer (tso off, a qdisc, a threaded NAPI)"; return 1; }
			done
		done
	fi
	for nf in iptables ip6tables arptables; do
		[ "${BENCH_BRNF:-0}" = 0 ] && [ -e /proc/sys/net/bridge/bridge-nf-call-$nf ] || continue
			ip netns exec "$LAB-sw" sysctl -qw "net.bridge.bridge-nf-call-$nf=0"
	done
	# The senders set CC on their own sockets (iperf3 -C): a namespace's
	# default may only be one of the host's tcp_allowed_congestion_control.
	grep -qw -- "$1" /proc/sys/net/ipv4/tcp_available_congestion_control
}

# server_base_conf SOCKET: what every lab server's vpnsyncd.conf holds: the
# VIP listener, the tunnel, the lab PKI with its CRL, the pushed inside route.
# LAB_CLIENT_NETWORK replaces the client network 10.8.0.0/24 (its 253
# addresses), e.g. 10.8.0.0/18 for 10,000 sessions.
server_base_conf() {
	cat <<-EOC
		listen on $PUB_VIP port 1194
		tun device tun0
		client network ${LAB_CLIENT_NETWORK:-10.8.0.0/24}
		ca "$PKI/ca.crt"
		certificate "$PKI/server.crt"
		key "$PKI/server.key"
		crl "$PKI/crl.pem"
		socket "$1"
		push route 198.19.0.0/24
	EOC
}

# client_conf NAME PKI [extra openvpn options...]: a stock client profile.
client_conf() {
	local name=$1 pki=$2
	shift 2
	cat <<-EOC
		client
		dev tun
		proto udp
		remote $PUB_VIP 1194
		nobind
		ca $pki/ca.crt
		cert $pki/$name.crt
		key $pki/$name.key
		remote-cert-tls server
		verb 3
	EOC
	local o
	for o in "$@"; do echo "$o"; done
}

# --- One server (s1 holds both VIPs itself, no keepalived) ----------------
# solo_lab [N_CLIENTS]: the PKI in $PKI, the topology with one server and
# N_CLIENTS (1) clients, the VIPs on s1, and SOCK, its control socket.
solo_lab() {
	[ -f "$PKI/ca.crt" ] || make_pki "$PKI"
	lab_topology 1 "${1:-1}"
	ip -n "$LAB-s1" addr add "$PUB_VIP/24" dev eth0
	ip -n "$LAB-s1" addr add "$IN_VIP/24" dev eth1
	SOCK=$LAB_TMP/vpnsyncd.sock
}

# solo_start CONF [LOG [FLAGS]]: vpnsyncd FLAGS (-dv) on s1 with CONF, its
# stderr added to LOG ($LAB_TMP/server.log), its pid in SERVER; true once
# its control socket answers (within 10 s).
solo_start() {
	ip netns exec "$LAB-s1" "$VPNSYNCD" "${3:--dv}" -f "$1" 2>>"${2:-$LAB_TMP/server.log}" &
	SERVER=$!
	LAB_PIDS+=("$SERVER")
	wait_for 10 "$VPNSYNCCTL" -s "$SOCK" show summary >/dev/null
}

# solo_stop: SIGTERM to the vpnsyncd solo_start started, and its exit.
solo_stop() {
	kill "$SERVER" 2>/dev/null
	wait "$SERVER" 2>/dev/null
}

# solo_ctl ARGS...: vpnsyncctl on s1's control socket.
solo_ctl() { "$VPNSYNCCTL" -s "$SOCK" "$@"; }

# solo_client N PROFILE: stock openvpn on client N with the profile file,
# logging to $LAB_TMP/cN.log (ha_connected N tells when it completed).
solo_client() {
	: >"$LAB_TMP/c$1.log"
	ip netns exec "$LAB-c$1" openvpn --config "$2" --log "$LAB_TMP/c$1.log" &
	LAB_PIDS+=("$!")
}

# --- The HA lab: keepalived (VRRP) + vpnsyncd on every server --------------
# ha_lab N_SERVERS N_CLIENTS [ADVERT]: the topology, a PKI in $PKI, and on
# every server sI vpnsyncd then keepalived (priority 150/100/50 for s1/s2/s3,
# 30 for more). ADVERT is advert_int in seconds: 1 (VRRPv2, the default) or
# below 1 (VRRPv3, e.g. 0.1). Returns once one server holds both VIPs.
#
# Per server, everything lives in $LAB_TMP/sI/: vpnsyncd.conf, vpnsyncd.sock,
# vpnsyncd.pid, vpnsyncd.log (every line prefixed with a Unix time with
# microseconds), demote (keepalived's track_file, written by vpnsyncd,
# created by keepalived's init_file), keepalived.conf, keepalived.log, ka*.pid.
#
# Failure detection is the example's alone (etc/examples/keepalived.conf):
# the sync group tracks the tun device (track_interface tun0), which exists
# exactly as long as vpnsyncd's engine does, so a killed daemon is seen at
# once through netlink (keepalived's track_process would need the proc
# connector, which network namespaces do not have); and a script,
# vpnsyncctl -t 1 show summary every second, so a hung daemon is seen too.
#
# Demotion: the demote value is 120, above the largest priority difference
# (150 - 50), and keepalived clamps the effective priority to >= 1: a demoted
# server loses against any server that is not demoted.
# Preemption stays on (VRRP's default): a server that is back and has its
# session table complete takes the VIPs back when its priority is higher.
#
# Backups bind the VIP before they hold it: vpnsyncd uses IP_FREEBIND, so the
# lab does not set net.ipv4.ip_nonlocal_bind.
HA_DEMOTE=${HA_DEMOTE:-120}
HA_ADVERT=1
HA_SERVERS=0
HA_CLIENTS=0
PKI=${PKI:-$LAB_TMP/pki}

# stamp: copies stdin to stdout, each line prefixed with "UNIXTIME.USEC ".
stamp() {
	local l
	while IFS= read -r l || [ -n "$l" ]; do
		printf '%s %s\n' "$EPOCHREALTIME" "$l"
	done
}

ha_dir() { echo "$LAB_TMP/s$1"; }
ha_sock() { echo "$LAB_TMP/s$1/vpnsyncd.sock"; }
ha_log() { echo "$LAB_TMP/s$1/vpnsyncd.log"; }
ha_ctl() { local i=$1; shift; "$VPNSYNCCTL" -s "$(ha_sock "$i")" "$@"; }
ha_priority() {
	case $1 in 1) echo 150 ;; 2) echo 100 ;; 3) echo 50 ;; *) echo 30 ;; esac
}

# ha_server_conf I [SYNC-KEY-FILE]: vpnsyncd.conf of server I. A case may
# add to it: HA_LISTEN_OWN=1, a second listener on the server's own public
# address (198.18.0.1I port 1194); HA_CONF_EXTRA and HA_SYNC_EXTRA, lines
# of its own, outside and inside the sync block (e.g. "reneg-sec 3",
# "rekey-window 2"); HA_WRAP, the control-channel wrapping statement
# (tls-auth with the lab's ta.key by default).
ha_server_conf() {
	local i=$1 key=${2:-$PKI/sync.key} d wrap=${HA_WRAP:-"tls-auth \"$PKI/ta.key\" direction 0"}
	d=$(ha_dir "$i")
	server_base_conf "$d/vpnsyncd.sock"
	[ -z "${HA_LISTEN_OWN:-}" ] || echo "listen on 198.18.0.1$i port 1194"
	[ -z "${HA_CONF_EXTRA:-}" ] || printf '%s\n' "$HA_CONF_EXTRA"
	cat <<-EOC
		$wrap
		keepalive ${HA_KEEPALIVE:-2 10}
		sync {
			role vip $PUB_VIP interface eth0
			multicast interface eth1
			key "$key"
			member $i
			demote file "$d/demote" value $HA_DEMOTE
			${HA_SYNC_EXTRA:-}
		}
	EOC
}

# ha_keepalived_conf I: keepalived.conf of server I: etc/examples/keepalived.conf
# itself (the lab has its layout: interfaces, VIPs, router ids), so that the
# lab runs what users copy. Substituted: router_id, priority, the demote
# file's path and init_file value, advert_int, the vpnsyncctl of the
# track_script (this build's, with the server's socket); added to global_defs: VRRPv3
# for a sub-second advert_int, and gratuitous ARPs at once (no second burst
# 5 s later). Fails, saying which, if the example no longer has one of the
# lines substituted. HA_KEEPALIVED_SED, if set, is one more sed -E
# expression of the caller's (regress/fullnat.sh: the notify lines).
HA_KEEPALIVED_EXAMPLE=$TOP/etc/examples/keepalived.conf
ha_keepalived_conf() {
	local i=$1 d prio ver="" out want
	d=$(ha_dir "$i")
	prio=$(ha_priority "$i")
	case $HA_ADVERT in 0.* | .*) ver='\n\tvrrp_version 3' ;; esac
	out=$(sed -E \
		-e "s|^(\trouter_id) vpn1\$|\1 $LAB-s$i|" \
		-e "s|^global_defs \{\$|&$ver\n\tvrrp_garp_master_delay 0\n\tvrrp_garp_master_repeat 3|" \
		-e "s|\"/run/vpnsyncd/demote\"|\"$d/demote\"|" \
		-e "s|^(\tinit_file) 50\$|\1 $HA_DEMOTE|" \
		-e "s|^(\tpriority) 150\t.*|\1 $prio|" \
		-e "s|^(\tadvert_int) 1\$|\1 $HA_ADVERT|" \
		-e "s|\"/usr/local/sbin/vpnsyncctl -t 1 |\"$VPNSYNCCTL -s $d/vpnsyncd.sock -t 1 |" \
		${HA_KEEPALIVED_SED:+-e "$HA_KEEPALIVED_SED"} \
		"$HA_KEEPALIVED_EXAMPLE") || return 1
	for want in "router_id $LAB-s$i" "file \"$d/demote\"" "init_file $HA_DEMOTE" \
		"script \"$VPNSYNCCTL -s $d/vpnsyncd.sock -t 1 show summary\"" \
		"priority $prio" "advert_int $HA_ADVERT" "vrrp_garp_master_delay 0"; do
		grep -qF "$want" <<<"$out" || {
			say "ha_keepalived_conf: $HA_KEEPALIVED_EXAMPLE changed: no line to turn into \"$want\" (fix the sed of regress/lib.sh)"
			return 1
		}
	done
	printf '%s\n' "$out"
}

# start_vpnsyncd I [SYNC-KEY-FILE]: starts vpnsyncd on server I (foreground,
# verbose), its stderr time-stamped into vpnsyncd.log; waits for its socket.
start_vpnsyncd() {
	local i=$1 d
	d=$(ha_dir "$i")
	mkdir -p "$d"
	ha_server_conf "$i" "${2:-}" >"$d/vpnsyncd.conf"
	ip netns exec "$LAB-s$i" "$VPNSYNCD" -d -v -f "$d/vpnsyncd.conf" 2> >(stamp >>"$d/vpnsyncd.log") &
	echo $! >"$d/vpnsyncd.pid"
	LAB_PIDS+=("$!")
	disown $!
	wait_for 10 "$VPNSYNCCTL" -s "$d/vpnsyncd.sock" show summary >/dev/null ||
		{ say "start_vpnsyncd $i: no control socket after 10 s:"; tail -5 "$d/vpnsyncd.log" >&2; return 1; }
}

# start_keepalived I: keepalived in server I's namespace, with its own
# config and pid files (never the host's /run/keepalived*.pid).
start_keepalived() {
	local i=$1 d
	d=$(ha_dir "$i")
	mkdir -p "$d"
	ha_keepalived_conf "$i" >"$d/keepalived.conf" || return 1
	ip netns exec "$LAB-s$i" keepalived -n -l -D -f "$d/keepalived.conf" \
		-p "$d/ka.pid" -r "$d/ka-vrrp.pid" -c "$d/ka-chk.pid" -b "$d/ka-bfd.pid" \
		> >(stamp >>"$d/keepalived.log") 2>&1 &
	echo $! >"$d/keepalived.parent"
	LAB_PIDS+=("$!")
	disown $!
}

# ha_vips I: how many of the two VIPs server I holds (0, 1 or 2).
ha_vips() {
	local n=0
	ip -n "$LAB-s$1" -4 addr show dev eth0 2>/dev/null | grep -q "inet $PUB_VIP/" && n=$((n + 1))
	ip -n "$LAB-s$1" -4 addr show dev eth1 2>/dev/null | grep -q "inet $IN_VIP/" && n=$((n + 1))
	echo $n
}

# master_of: the index of the server(s) holding the public VIP 198.18.0.10
# (space-separated if several, empty if none).
master_of() {
	local i out=()
	for i in $(seq 1 "$HA_SERVERS"); do
		[ -n "${HA_DOWN[$i]:-}" ] && continue
		ip -n "$LAB-s$i" -4 addr show dev eth0 2>/dev/null | grep -q "inet $PUB_VIP/" && out+=("$i")
	done
	echo "${out[*]}"
}

# ha_settled: exactly one server holds both VIPs and nobody else holds any.
# A powered-off server is not counted: its addresses may linger on its side
# of the cut cables (keepalived was killed before it could remove them), but
# nobody can reach them.
ha_settled() {
	local i m="" total=0 v
	for i in $(seq 1 "$HA_SERVERS"); do
		[ -n "${HA_DOWN[$i]:-}" ] && continue
		v=$(ha_vips "$i")
		total=$((total + v))
		[ "$v" = 2 ] && m=$i
	done
	[ -n "$m" ] && [ "$total" = 2 ]
}

ha_lab() {
	local ns=$1 nc=$2 i
	HA_ADVERT=${3:-1}
	HA_SERVERS=$ns
	HA_CLIENTS=$nc
	[ -f "$PKI/ca.crt" ] || make_pki "$PKI"
	lab_topology "$ns" "$nc"
	for i in $(seq 1 "$ns"); do
		mkdir -p "$(ha_dir "$i")"
		start_vpnsyncd "$i" || return 1
	done
	for i in $(seq 1 "$ns"); do start_keepalived "$i" || return 1; done
	wait_for 20 ha_settled || { say "ha_lab: no server holds both VIPs after 20 s"; return 1; }
	say "ha_lab: $ns servers (advert_int $HA_ADVERT), master s$(master_of)"
}

# ha_ns_pids I: every process in server I's namespace.
ha_ns_pids() { ip netns pids "$LAB-s$1" 2>/dev/null; }

# vpnsyncd_pids I: the pids of server I's vpnsyncd, the parent and its
# children (every process of the namespace named vpnsyncd or vpnsyncd-*).
vpnsyncd_pids() {
	local p out=()
	for p in $(ha_ns_pids "$1"); do
		# The parent is "vpnsyncd", its children "vpnsyncd-engine" and so on.
		case "$(cat "/proc/$p/comm" 2>/dev/null)" in vpnsyncd | vpnsyncd-*) out+=("$p") ;; esac
	done
	echo "${out[@]}"
}

# kill_vpnsyncd I: SIGKILL of vpnsyncd's parent on server I (its children
# notice their parent is gone and exit; the tun device goes with them).
kill_vpnsyncd() {
	local pid
	pid=$(cat "$(ha_dir "$1")/vpnsyncd.pid" 2>/dev/null) || return 1
	kill -9 "$pid" 2>/dev/null
}

# power_cut I: server I loses power. The cables are pulled first: the
# switch-side veth ends (sI-eth0, sI-eth1 in the switch namespace) go down,
# so not one more frame leaves or reaches the server; then every process of
# its namespace (keepalived, vpnsyncd and children) gets SIGKILL at once.
# Why the switch side and not "ip link set down" inside the server: a link
# set down by the server itself is an event its keepalived and vpnsyncd
# would see and react to (FAULT state, a priority-0 advert, releasing the
# VIP), i.e. a graceful exit. A power cut gives the backups nothing: they
# must notice the silence (master-down timer 3 x advert_int + skew).
declare -A HA_DOWN
power_cut() {
	local i=$1
	HA_DOWN[$i]=1
	ip -n "$LAB-sw" link set "s$i-eth0" down
	ip -n "$LAB-sw" link set "s$i-eth1" down
	ha_ns_pids "$i" | xargs -r kill -9 2>/dev/null
	POWER_CUT_AT=$EPOCHREALTIME
}

# power_on I: server I boots again: no process, no VIP, no demote file (a
# rebooted machine holds none: /run is empty), cables back, then keepalived
# and vpnsyncd start in the order of a real boot (vpnsyncd.service runs
# after keepalived.service): keepalived must start without tun0 and create
# the demote file with the demote value (init_file), which POWER_ON_DEMOTE
# holds as read before vpnsyncd started. Does not wait for VRRP.
power_on() {
	local i=$1 d
	unset "HA_DOWN[$i]"
	d=$(ha_dir "$i")
	ha_ns_pids "$i" | xargs -r kill -9 2>/dev/null
	sleep 0.2
	ip -n "$LAB-s$i" addr del "$PUB_VIP/24" dev eth0 2>/dev/null
	ip -n "$LAB-s$i" addr del "$IN_VIP/24" dev eth1 2>/dev/null
	ip -n "$LAB-s$i" link del tun0 2>/dev/null
	rm -f "$d/demote"
	echo "--- power on $EPOCHREALTIME" >>"$d/vpnsyncd.log"
	ip -n "$LAB-sw" link set "s$i-eth0" up
	ip -n "$LAB-sw" link set "s$i-eth1" up
	start_keepalived "$i" || return 1
	wait_for 5 test -s "$d/demote"
	POWER_ON_DEMOTE=$(cat "$d/demote" 2>/dev/null)
	start_vpnsyncd "$i"
}

# ping_log NS DEST FILE: 10 Hz ping from namespace NS, -D timestamps, -O to
# also log the unanswered ones; in the background until stopped (its pid
# is in PING_PID and LAB_PIDS).
ping_log() {
	ip netns exec "$1" ping -D -O -n -i 0.1 -W 1 "$2" >"$3" 2>&1 &
	PING_PID=$!
	LAB_PIDS+=("$!")
	disown $!
}

# longest_gap FILE [T]: the longest time in seconds (2 decimals) without a
# reply in a ping_log file, from its first reply after the Unix time T (0)
# on: the largest difference between the -D timestamps of consecutive
# replies, and the time from the last reply to the last line (an outage
# that never ended counts too). 99.99 if there is no reply.
longest_gap() {
	awk -v since="${2:-0}" '
		/^\[[0-9]+\.[0-9]+\]/ {
			t = substr($1, 2, length($1) - 2) + 0
			if (t <= since) next
			last = t
			if ($0 ~ / bytes from /) {
				if (have && t - prev > gap) gap = t - prev
				prev = t; have = 1
			}
		}
		END {
			if (!have) { printf "99.99\n"; exit }
			if (last - prev > gap) gap = last - prev
			printf "%.2f\n", gap
		}' "$1"
}

# ping_replies FILE: the number of replies in a ping_log file.
ping_replies() { grep -c " bytes from " "$1"; }

# HA clients: ha_start_client N NAME [openvpn options...]: stock openvpn on
# client N (tls-auth, or the openvpn option in HA_CLIENT_WRAP), its output
# time-stamped into $LAB_TMP/cN.log.
ha_start_client() {
	local n=$1 name=$2
	shift 2
	client_conf "$name" "$PKI" "${HA_CLIENT_WRAP:-tls-auth $PKI/ta.key 1}" "$@" >"$LAB_TMP/c$n.ovpn"
	: >"$LAB_TMP/c$n.log"
	ip netns exec "$LAB-c$n" openvpn --config "$LAB_TMP/c$n.ovpn" --suppress-timestamps \
		> >(stamp >>"$LAB_TMP/c$n.log") 2>&1 &
	eval "HA_CLIENT$n=$!"
	LAB_PIDS+=("$!")
	disown $!
}

# ha_connected N: client N completed its (first) handshake.
ha_connected() { grep -q "Initialization Sequence Completed" "$LAB_TMP/c$1.log"; }

# tunnel_ip N: client N's address on tun0 (empty without one).
tunnel_ip() { ip -n "$LAB-c$1" -4 addr show tun0 2>/dev/null | awk '/inet /{sub("/.*", "", $2); print $2}'; }

# client_restarted N: client N's log shows a restart or a data-channel
# complaint: SIGUSR1, "Restart pause", a second "Initialization Sequence
# Completed", "replay" or "bad packet ID" (also the "Inactivity timeout").
client_restarted() {
	local f=$LAB_TMP/c$1.log
	grep -Eqi "SIGUSR1|Restart pause|replay|bad packet ID|Inactivity timeout" "$f" && return 0
	[ "$(grep -c "Initialization Sequence Completed" "$f")" -gt 1 ]
}

# client_trouble N: the lines that made client_restarted true (for the log).
client_trouble() {
	grep -Ei "SIGUSR1|Restart pause|replay|bad packet ID|Inactivity timeout|Initialization Sequence Completed" "$LAB_TMP/c$1.log" | tail -n +2 | head -5
}

# ha_explain: what the lab looks like, for a failed check: namespaces, who
# holds which VIP, the demote files, the last keepalived and vpnsyncd lines
# of every server, and whether the clients still run.
ha_explain() {
	local i d
	say "  namespaces: $(ip netns list | awk '{print $1}' | tr '\n' ' ')"
	for i in $(seq 1 "$HA_SERVERS"); do
		d=$(ha_dir "$i")
		say "  s$i: VIPs $(ha_vips "$i")${HA_DOWN[$i]:+ (powered off)}, demote $(cat "$d/demote" 2>/dev/null)"
		tail -n 4 "$d/keepalived.log" 2>/dev/null | sed "s/^/    s$i keepalived: /" >&2
		tail -n 3 "$d/vpnsyncd.log" 2>/dev/null | sed "s/^/    s$i vpnsyncd: /" >&2
	done
	for i in $(seq 1 "$HA_CLIENTS"); do
		say "  c$i: $(ip netns pids "$LAB-c$i" 2>/dev/null | wc -l) process(es), tunnel IP '$(tunnel_ip "$i")'"
		tail -n 3 "$LAB_TMP/c$i.log" 2>/dev/null | sed "s/^/    c$i: /" >&2
	done
}

# ha_teardown: ends the current HA lab (processes, namespaces, per-server
# files) but keeps $LAB_TMP and the PKI, so that the next case starts clean.
ha_teardown() {
	lab_stop
	HA_DOWN=()
	rm -rf "$LAB_TMP"/s[0-9]* "$LAB_TMP"/c[0-9]*.log "$LAB_TMP"/c[0-9]*.pcap "$LAB_TMP"/c[0-9]*.tcpdump
	HA_SERVERS=0
	HA_CLIENTS=0
}

# --- Two servers under keepalived, the set-up of most feature labs --------
# ha_pair N_CLIENTS [LABEL]: ha_lab 2 N_CLIENTS; sets M (the master) and B
# (the backup). On failure: "not ok - LABELthe lab starts", and false.
ha_pair() {
	ha_lab 2 "$1" || { not_ok "${2:-}the lab starts"; ha_explain; return 1; }
	M=$(master_of)
	B=$((3 - M))
}

# has_line FILE ERE: FILE has a line matching ERE.
has_line() { grep -Eq "$2" "$1"; }

# file_holds FILE TEXT: FILE holds TEXT (one line). Read on each call, so
# that wait_for polls the file: in `wait_for 5 test "$(cat FILE)" = TEXT`
# the shell reads it once, before the wait begins.
file_holds() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }

# ping_inside N [COUNT]: client N pings the inside host through the tunnel
# (COUNT, 3, pings; true if one is answered).
ping_inside() { ip netns exec "$LAB-c$1" ping -c "${2:-3}" -i 0.2 -W 1 "$INSIDE_IP" >/dev/null 2>&1; }

# taken_over OLD: a server other than OLD holds both VIPs, and still does
# after the lab settled.
taken_over() {
	local m
	m=$(master_of)
	[ -n "$m" ] && [ "$m" != "$1" ] && ha_settled && [ "$(master_of)" = "$m" ]
}

# ha_cut_master [LABEL]: the power cut of the master s$M, with T_FAIL the
# time of the cut; checks that s$B takes both VIPs over within 15 s and
# says how long it took.
ha_cut_master() {
	T_FAIL=$EPOCHREALTIME
	power_cut "$M"
	say "power cut of the master s$M"
	check "${1:-}s$B takes both VIPs over" wait_for 15 taken_over "$M" || ha_explain
	say "s$(master_of) is master after $(awk -v a="$T_FAIL" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s"
}

# check_no_restart N NAME: client N (NAME) neither restarted nor warned
# (client_restarted); the lines that say otherwise are shown.
check_no_restart() {
	if client_restarted "$1"; then
		not_ok "$2 did not restart nor warn (replay, bad packet ID)"
		client_trouble "$1" | sed 's/^/    /' >&2
	else
		ok "$2 did not restart nor warn (replay, bad packet ID)"
	fi
}

# replied_since FILE T [N]: a ping_log FILE has at least N (3) replies
# stamped after the Unix time T.
replied_since() {
	[ "$(awk -v t="$2" '/ bytes from / { if (substr($1, 2, length($1) - 2) + 0 > t) n++ } END { print n + 0 }' "$1")" -ge "${3:-3}" ]
}

# sync_field I PATH: a field of `vpnsyncctl -j show sync` on server I, e.g.
# "sessions", "rejected.auth", "sent" (empty when it cannot be read).
sync_field() {
	ha_ctl "$1" -j show sync 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(str(v).lower() if isinstance(v, bool) else v)' "$2" 2>/dev/null
}
