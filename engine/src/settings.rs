//! The protocol settings of the engine, made from the configuration and
//! the key files the parent sent: the TLS configuration, the control
//! channel wrapping and what is pushed to clients.

use std::sync::Arc;

use vpnsyncd_common::msg::KeyKind;
use vpnsyncd_config::{Config, Wrap};

use crate::push::PushSettings;
use crate::session::SessionConfig;
use crate::tls::{self, Credentials};
use crate::tlscryptv2::ServerKey;
use crate::wrap::{StaticKey, Wrapper};

fn key<'a, B: AsRef<[u8]>>(keys: &'a [(KeyKind, B)], kind: KeyKind, what: &str) -> Result<&'a [u8], String> {
    keys.iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_ref())
        .ok_or_else(|| format!("{what}: the parent sent no key material"))
}

/// Everything sessions share, and the template of their wrapping.
///
/// `keys` are the key files as received (a [`vpnsyncd_common::secret::Secret`]
/// each, zeroized on drop), or plain bytes in tests.
pub fn build<B: AsRef<[u8]>>(conf: &Config, keys: &[(KeyKind, B)]) -> Result<(Arc<SessionConfig>, Wrapper), String> {
    let crl = match conf.crl {
        Some(_) => Some(key(keys, KeyKind::Crl, "crl")?),
        None => None,
    };
    let creds = Credentials {
        ca: key(keys, KeyKind::Ca, "ca")?,
        certificate: key(keys, KeyKind::Certificate, "certificate")?,
        key: key(keys, KeyKind::Key, "key")?,
        crl,
        client_cert: conf.verify_client_cert,
    };
    let tls = tls::server_config(&creds)?;
    let wrap = match &conf.wrap {
        None => Wrapper::none(),
        Some(Wrap::TlsAuth { path, direction, digest }) => {
            let k = StaticKey::parse(key(keys, KeyKind::Wrap, "tls-auth")?)
                .map_err(|e| format!("tls-auth {}: {e}", path.display()))?;
            Wrapper::tls_auth(&k, *direction, *digest)
        }
        Some(Wrap::TlsCrypt { path }) => {
            let k = StaticKey::parse(key(keys, KeyKind::Wrap, "tls-crypt")?)
                .map_err(|e| format!("tls-crypt {}: {e}", path.display()))?;
            Wrapper::tls_crypt(&k, true)
        }
        Some(Wrap::TlsCryptV2 { path }) => {
            let k = ServerKey::parse(key(keys, KeyKind::Wrap, "tls-crypt-v2")?)
                .map_err(|e| format!("tls-crypt-v2 {}: {e}", path.display()))?;
            Wrapper::tls_crypt_v2_server(k)
        }
    };
    let push = PushSettings {
        server_address: conf.server_address(),
        netmask: conf.network.netmask(),
        network: conf.network,
        network6: conf.network6,
        routes: conf.push_routes.clone(),
        dns: conf.push_dns.clone(),
        domain: conf.push_domain.clone(),
        extra: conf.push_options.clone(),
        keepalive: conf.keepalive,
    };
    let token = match conf.password_token {
        Some(lifetime) => Some(
            crate::token::TokenKey::new(key(keys, KeyKind::AuthToken, "password token")?, lifetime.into())
                .ok_or("password token: the token key is not 32 bytes")?,
        ),
        None => None,
    };
    let password = conf
        .password
        .as_ref()
        .map(|p| crate::auth::PasswordSettings { timeout: std::time::Duration::from_secs(p.timeout().into()), token });
    let session = SessionConfig {
        tls,
        data_ciphers: conf.data_ciphers.clone(),
        fallback_cipher: conf.fallback_cipher,
        auth: conf.auth,
        keepalive: conf.keepalive,
        reneg_sec: conf.reneg_sec,
        push,
        rekey_window: std::time::Duration::from_secs(conf.sync.as_ref().map_or(60, |s| s.rekey_window).into()),
        member: conf.sync.as_ref().map_or(1, |s| s.member),
        replicated: conf.sync.is_some(),
        password,
    };
    Ok((Arc::new(session), wrap))
}
