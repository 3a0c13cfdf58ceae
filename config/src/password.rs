//! The `password` statements: how the usernames and passwords that
//! clients send (`auth-user-pass`) are checked, and the session tokens
//! (`auth-gen-token`) that spare the check on every renegotiation.
//!
//! Named `password` rather than `auth`, which already names the HMAC of
//! CBC data channels (OpenVPN's `auth SHA256`).

use super::{PResult, Parser};
use crate::PasswordCheck;

/// A check that takes longer is refused: the client's own
/// `hand-window` is 60 s, and a stuck LDAP server must not hold sessions.
pub const DEFAULT_PASSWORD_TIMEOUT: u32 = 10;
const MAX_PASSWORD_TIMEOUT: u32 = 60;
/// OpenVPN's `auth-gen-token` default lifetime is the session's, bounded
/// here so a token of a stolen machine does not live for ever.
pub const DEFAULT_TOKEN_LIFETIME: u32 = 12 * 3600;
const MAX_TOKEN_LIFETIME: u32 = 30 * 86400;
const MIN_TOKEN_LIFETIME: u32 = 60;
/// `password pam` without `service`: /etc/pam.d/vpnsyncd.
pub const DEFAULT_PAM_SERVICE: &str = "vpnsyncd";
/// `password bsdauth` without `type`: login.conf(5)'s `auth-vpnsyncd`
/// list of the user's class, or its `auth` list when the class has none.
pub const DEFAULT_BSDAUTH_TYPE: &str = "auth-vpnsyncd";
const MAX_AUTH_NAME: usize = 64;

impl Parser {
    /// `verify-client-cert require|optional|none`.
    pub(super) fn verify_client_cert(&mut self, pos: crate::Pos) -> PResult<()> {
        self.once("verify-client-cert", pos)?;
        self.mark("verify-client-cert", pos);
        let (w, p) = self.word("require, optional or none")?;
        let mode = crate::ClientCert::ALL.into_iter().find(|m| m.name() == w).ok_or_else(|| {
            self.error(p, format!("unknown verify-client-cert mode \"{w}\"; valid: require, optional, none"))
        })?;
        self.d.verify_client_cert = Some(mode);
        Ok(())
    }

    /// `password script PATH [timeout N]`, `password pam [service NAME]
    /// [timeout N]`, `password bsdauth [style NAME] [type NAME] [timeout N]`
    /// or `password token [lifetime N]`.
    pub(super) fn password(&mut self, pos: crate::Pos) -> PResult<()> {
        let (what, p) = self.word("script, pam, bsdauth or token")?;
        match what.as_str() {
            "script" => {
                self.once("password check", pos)?;
                let (path, at) = self.text("a script path")?;
                let path = std::path::PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(
                        self.error(at, format!("password script \"{}\" must be an absolute path", path.display()))
                    );
                }
                let timeout = self.password_timeout()?;
                self.d.password = Some(PasswordCheck::Script { path, timeout });
            }
            "pam" => {
                self.once("password check", pos)?;
                if !cfg!(target_os = "linux") {
                    return Err(self.error(
                        p,
                        format!(
                            "password pam needs Linux-PAM, which {} lacks: use password bsdauth [style NAME] [type NAME]",
                            std::env::consts::OS
                        ),
                    ));
                }
                let service = if self.optional("service")? {
                    self.auth_name("PAM service")?
                } else {
                    DEFAULT_PAM_SERVICE.to_string()
                };
                let timeout = self.password_timeout()?;
                self.d.password = Some(PasswordCheck::Pam { service, timeout });
            }
            "bsdauth" => {
                self.once("password check", pos)?;
                if !cfg!(target_os = "openbsd") {
                    return Err(self.error(
                        p,
                        format!(
                            "password bsdauth is OpenBSD's BSD Authentication, which {} lacks: use password pam [service NAME]",
                            std::env::consts::OS
                        ),
                    ));
                }
                let style = if self.optional("style")? { Some(self.auth_name("authentication style")?) } else { None };
                let kind = if self.optional("type")? {
                    self.auth_name("authentication type")?
                } else {
                    DEFAULT_BSDAUTH_TYPE.to_string()
                };
                let timeout = self.password_timeout()?;
                self.d.password = Some(PasswordCheck::BsdAuth { style, kind, timeout });
            }
            "token" => {
                self.once("password token", pos)?;
                self.mark("password token", pos);
                let lifetime = if self.optional("lifetime")? {
                    self.number("token lifetime", MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME)?
                } else {
                    DEFAULT_TOKEN_LIFETIME
                };
                self.d.password_token = Some(lifetime);
            }
            _ => {
                return Err(
                    self.error(p, format!("unknown password check \"{what}\"; valid: script, pam, bsdauth, token"))
                )
            }
        }
        Ok(())
    }

    /// The optional `timeout N` of a password check.
    fn password_timeout(&mut self) -> PResult<u32> {
        if self.optional("timeout")? {
            self.number("password timeout", 1, MAX_PASSWORD_TIMEOUT)
        } else {
            Ok(DEFAULT_PASSWORD_TIMEOUT)
        }
    }

    /// A PAM service, BSD auth style or type: it names a file
    /// (/etc/pam.d/NAME, /usr/libexec/auth/login_NAME), so no path.
    fn auth_name(&mut self, what: &str) -> PResult<String> {
        let (name, at) = self.text(what)?;
        let ok = name.len() <= MAX_AUTH_NAME
            && !name.starts_with('.')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(self.error(
                at,
                format!("{what} \"{name}\" is not a name: use up to {MAX_AUTH_NAME} letters, digits, '.', '_' or '-'"),
            ));
        }
        Ok(name)
    }
}
