#!/usr/bin/env bash
# tls-crypt-v2 in the HA lab: two servers under keepalived with
# `tls-crypt-v2`, stock OpenVPN 2.6 clients with `tls-crypt-v2`.
#
# The cluster's server key is made by openvpn (--genkey
# tls-crypt-v2-server) and alice's client key by vpnsyncctl (genkey
# tls-crypt-v2-client), so keys cross both ways. Checks:
#   - alice connects, reaches the inside host, and her session (its
#     record carries her wrapped key) is installed on the backup;
#   - the master answered her V3 reset statelessly (an HMAC cookie and
#     EARLY_NEG_FLAGS asking for her key again) and made her session from
#     her P_CONTROL_WKC_V1, as a 2.6 server does;
#   - the master loses power; the backup takes over, and alice goes on
#     without a restart or a replay warning, with the same tunnel IP;
#   - bob, whose key is wrapped by another server key, gets no answer and
#     the server logs the refusal.
. "$(dirname "$0")/lib.sh"
lab_start openvpn keepalived

make_pki "$PKI"
T=$PKI/tc2
mkdir -p "$T"
openvpn --genkey tls-crypt-v2-server "$T/server.key" >/dev/null
"$VPNSYNCCTL" genkey tls-crypt-v2-client "$T/server.key" "$T/alice.key" >/dev/null
"$VPNSYNCCTL" genkey tls-crypt-v2-server "$T/other.key" >/dev/null
"$VPNSYNCCTL" genkey tls-crypt-v2-client "$T/other.key" "$T/bob.key" >/dev/null
check "vpnsyncctl writes client keys with mode 0600" test "$(stat -c %a "$T/alice.key")" = 600
check "vpnsyncctl refuses to overwrite a key" \
	bash -c '! "$0" genkey tls-crypt-v2-server "$1" 2>/dev/null' "$VPNSYNCCTL" "$T/other.key"

HA_WRAP="tls-crypt-v2 \"$T/server.key\""
ha_pair 2 || { summary; exit 1; }

HA_CLIENT_WRAP="tls-crypt-v2 $T/alice.key" ha_start_client 1 alice
check "alice (tls-crypt-v2, vpnsyncctl-made key) connects through the VIP" wait_for 20 ha_connected 1 || ha_explain
check "s$M kept no state for alice's V3 reset: her session came from the P_CONTROL_WKC_V1 under its HMAC cookie" \
	has_line "$(ha_log "$M")" "new session, peer-id [0-9]+, after its HMAC cookie"
IP1=$(tunnel_ip 1)
check "alice reaches the inside host (tunnel IP $IP1)" ping_inside 1
check "the backup s$B holds alice's session" wait_for 5 has_line "$(ha_log "$B")" "ghost alice .*installed"

ha_cut_master
check "s$B promoted alice's session" wait_for 5 has_line "$(ha_log "$B")" "promoted: [1-9][0-9]* ghost session"
check "alice reaches the inside host after the failover" ping_inside 1 5
check_no_restart 1 alice
check "alice keeps her tunnel IP $IP1 (now $(tunnel_ip 1))" test "$(tunnel_ip 1)" = "$IP1"

HA_CLIENT_WRAP="tls-crypt-v2 $T/bob.key" ha_start_client 2 bob
check "s$B refuses bob's key of another server key (logged)" \
	wait_for 15 has_line "$(ha_log "$B")" "first packet refused: tls-crypt-v2: wrapped client key does not authenticate"
sleep 3
check "bob got no answer (no handshake)" bash -c '! grep -q "Initialization Sequence Completed\|Peer Connection Initiated" "$0"' "$LAB_TMP/c2.log"
summary
