# Shared helpers of the vpnsyncd lab tests (sourced, bash).
#
# Every test runs inside network namespaces it creates itself, is bounded in
# time, and removes what it made on exit, also when it fails.

set -u
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

# need_root: lab tests create namespaces and devices; without root they
# cannot run, and say so instead of passing.
need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		say "FATAL: $(basename "$0") needs root (network namespaces, tun devices)."
		say "FATAL: run it as root; CI does."
		exit 2
	fi
}

ok() { PASSED=$((PASSED + 1)); say "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); say "not ok - $*"; }

# check DESCRIPTION COMMAND...: one assertion.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}

lab_cleanup() {
	local p n
	for p in "${LAB_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	for n in "${LAB_NETNS[@]}"; do
		ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$n" 2>/dev/null
	done
	rm -rf "$LAB_TMP"
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
