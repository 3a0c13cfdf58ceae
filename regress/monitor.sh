#!/usr/bin/env bash
# What monitoring reads: one server (s1, holding the VIPs) with a status
# file rewritten every second, a stock OpenVPN 2.6 client (c1); the file is
# parsed the way openvpn-monitor and openvpn_exporter parse a stock
# server's, in version 2 and then 3 (after a reload).
. "$(dirname "$0")/lib.sh"
lab_start openvpn python3

solo_lab
CONF=$LAB_TMP/vpnsyncd.conf
STATUS=$LAB_TMP/run/status
mkdir -p "$LAB_TMP/run"

# server_conf VERSION: the server with a status file of that version.
server_conf() {
	server_base_conf "$SOCK"
	echo "keepalive 2 10"
	echo "status \"$STATUS\" interval 1 version $1"
}

# parse_status FILE SEP CN IP: the file read as openvpn-monitor reads it
# (split each line on SEP, HEADER names the columns, rows must fill them,
# unknown GLOBAL_STATS skipped); prints the client's row, fails unless the
# client CN with tunnel address IP is listed and the file ends with END.
parse_status() {
	python3 - "$@" <<-'PY'
		import sys
		path, sep, cn, ip = sys.argv[1], sys.argv[2].replace("tab", "\t"), sys.argv[3], sys.argv[4]
		headers, rows, ended, stats = {}, {}, False, {}
		for line in open(path).read().splitlines():
		    f = line.split(sep)
		    if f[0] == "HEADER":
		        headers[f[1]] = f[2:]
		    elif f[0] in ("CLIENT_LIST", "ROUTING_TABLE"):
		        cols = headers[f[0]]
		        assert len(cols) == len(f) - 1, "%s: %d fields for %d columns" % (f[0], len(f) - 1, len(cols))
		        rows.setdefault(f[0], []).append(dict(zip(cols, f[1:])))
		    elif f[0] == "GLOBAL_STATS":
		        stats[f[1]] = f[2]
		    elif f[0] == "END":
		        ended = True
		assert ended, "no END"
		assert len(headers["CLIENT_LIST"]) == 12, headers["CLIENT_LIST"]
		c = [r for r in rows.get("CLIENT_LIST", []) if r["Common Name"] == cn]
		assert c and c[0]["Virtual Address"] == ip, rows
		r = [r for r in rows.get("ROUTING_TABLE", []) if r["Virtual Address"] == ip]
		assert r and r[0]["Common Name"] == cn, rows
		assert int(c[0]["Bytes Received"]) > 0 and c[0]["Data Channel Cipher"] == "AES-256-GCM", c
		assert int(c[0]["Bytes Sent"]) > 0, c
		print("client", c[0]["Common Name"], c[0]["Real Address"], c[0]["Virtual Address"],
		      "in", c[0]["Bytes Received"], "out", c[0]["Bytes Sent"], "role", stats.get("cluster_role"),
		      "sync", stats.get("sync_state"))
	PY
}

server_conf 2 >"$CONF"
solo_start "$CONF" || { say "FATAL: vpnsyncd did not start"; cat "$LAB_TMP/server.log" >&2; exit 1; }
client_conf alice "$PKI" >"$LAB_TMP/c1.ovpn"
solo_client 1 "$LAB_TMP/c1.ovpn"
if wait_for 30 ha_connected 1; then
	ok "stock client connected"
else
	not_ok "stock client connected"
	tail -5 "$LAB_TMP/c1.log" >&2
fi
IP=$(tunnel_ip 1)
listed() { grep -q "alice" "$STATUS"; }
check "status file lists the client within 3 s" wait_for 3 listed
check "version 2 parses like a stock server's" parse_status "$STATUS" , alice "$IP"
check "the file is mode 0640" test "$(stat -c %a "$STATUS")" = 640
check "no temporary file is left" test ! -e "$STATUS.tmp"

server_conf 3 >"$CONF"
solo_ctl reload >/dev/null
tabbed() { grep -q "^TITLE	" "$STATUS"; }
check "after a reload the file is version 3 within 3 s" wait_for 3 tabbed
check "version 3 parses like a stock server's" parse_status "$STATUS" tab alice "$IP"
summary
