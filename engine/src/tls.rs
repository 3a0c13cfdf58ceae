//! TLS of the control channel with rustls (ring provider): the server
//! configuration from the configured PEM files, with client certificates
//! required and verified against the CA and the CRL, and the client's
//! common name for logs and `vpnsyncctl show clients`.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use vpnsyncd_config::ClientCert;

/// The PEM bytes of the configured files, as the parent sent them.
pub struct Credentials<'a> {
    pub ca: &'a [u8],
    pub certificate: &'a [u8],
    pub key: &'a [u8],
    pub crl: Option<&'a [u8]>,
    /// `verify-client-cert`: whether a client certificate is required.
    pub client_cert: vpnsyncd_config::ClientCert,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration. Errors name the file kind and the fix.
pub fn server_config(c: &Credentials) -> Result<Arc<ServerConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(c.ca) {
        let cert = cert.map_err(|e| format!("ca: not a PEM certificate: {e}"))?;
        roots.add(cert).map_err(|e| format!("ca: unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca: no certificate found in the file".into());
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(c.certificate)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: not a PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no certificate found in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(c.key).map_err(|e| format!("key: no usable private key: {e}"))?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if let Some(crl) = c.crl {
        let crls: Vec<CertificateRevocationListDer<'static>> = CertificateRevocationListDer::pem_slice_iter(crl)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("crl: not a PEM CRL: {e}"))?;
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match c.client_cert {
        ClientCert::Require => builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("ca/crl: {e}"))?),
        ClientCert::Optional => builder
            .with_client_cert_verifier(verifier.allow_unauthenticated().build().map_err(|e| format!("ca/crl: {e}"))?),
        ClientCert::None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| format!("certificate/key: {e}"))?;
    // OpenVPN clients ignore session tickets and never resume.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A TLS failure in words an operator acts on; the rustls error follows.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let what = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Revoked => "client certificate revoked (crl)",
            C::Expired | C::ExpiredContext { .. } => "client certificate expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "client certificate not valid yet",
            C::UnknownIssuer => "client certificate not issued by the configured CA (unknown issuer)",
            C::BadSignature => "client certificate has a bad signature",
            _ => "client certificate refused",
        },
        rustls::Error::NoCertificatesPresented => "the client sent no certificate",
        _ => return e.to_string(),
    };
    format!("{what}: {e}")
}

/// The subject common name of a DER certificate, or a placeholder that
/// says why there is none.
pub fn common_name(cert: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, c)) => c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map_or_else(|| "(no common name)".to_string(), str::to_string),
        Err(_) => "(unparsable certificate)".to_string(),
    }
}

/// Test credentials made with `openssl` (EC P-256, valid until 2036):
/// a CA, a server, and a client "alice"; and a static key file for
/// tls-auth/tls-crypt. The fuzz targets build servers from them too
/// (feature `fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod testpki {
    pub const CA: &[u8] = include_bytes!("testdata/ca.crt");
    pub const SERVER_CRT: &[u8] = include_bytes!("testdata/server.crt");
    pub const SERVER_KEY: &[u8] = include_bytes!("testdata/server.key");
    pub const ALICE_CRT: &[u8] = include_bytes!("testdata/alice.crt");
    pub const ALICE_KEY: &[u8] = include_bytes!("testdata/alice.key");
    pub const STATIC_KEY: &[u8] = include_bytes!("testdata/static.key");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_pem_and_reads_the_common_name() {
        let c = Credentials {
            ca: testpki::CA,
            certificate: testpki::SERVER_CRT,
            key: testpki::SERVER_KEY,
            crl: None,
            client_cert: ClientCert::Require,
        };
        assert!(server_config(&c).is_ok());
        let der = CertificateDer::from_pem_slice(testpki::ALICE_CRT).unwrap();
        assert_eq!(common_name(&der), "alice");
        assert_eq!(common_name(b"junk"), "(unparsable certificate)");
    }

    #[test]
    fn the_test_static_key_parses() {
        assert!(crate::wrap::StaticKey::parse(testpki::STATIC_KEY).is_ok());
    }

    #[test]
    fn errors_name_the_file() {
        let c = Credentials {
            ca: b"nothing",
            certificate: testpki::SERVER_CRT,
            key: testpki::SERVER_KEY,
            crl: None,
            client_cert: ClientCert::Require,
        };
        assert_eq!(server_config(&c).err().unwrap(), "ca: no certificate found in the file");
        let c = Credentials {
            ca: testpki::CA,
            certificate: testpki::SERVER_CRT,
            key: b"",
            crl: None,
            client_cert: ClientCert::Require,
        };
        assert!(server_config(&c).err().unwrap().starts_with("key: "));
    }
}
