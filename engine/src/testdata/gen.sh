#!/bin/sh
# Regenerates the test PKI of the engine's unit tests (EC P-256, 10 years).
set -e
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
	-subj "/CN=vpnsyncd test CA" -keyout ca.key -out ca.crt 2>/dev/null
for n in server alice; do
	eku=clientAuth
	[ $n = server ] && eku=serverAuth
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n" \
		-keyout $n.key -out $n.csr 2>/dev/null
	openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
		-extfile /dev/stdin -out $n.crt 2>/dev/null <<EXT
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = $eku
subjectAltName = DNS:$n
EXT
	rm $n.csr
done
rm -f ca.srl
# The tls-auth/tls-crypt key of the fuzz targets.
openvpn --genkey secret static.key
