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

    /// `password script PATH [timeout N]` or `password token [lifetime N]`.
    pub(super) fn password(&mut self, pos: crate::Pos) -> PResult<()> {
        let (what, p) = self.word("script or token")?;
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
                let timeout = if self.optional("timeout")? {
                    self.number("password timeout", 1, MAX_PASSWORD_TIMEOUT)?
                } else {
                    DEFAULT_PASSWORD_TIMEOUT
                };
                self.d.password = Some(PasswordCheck::Script { path, timeout });
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
            _ => return Err(self.error(p, format!("unknown password check \"{what}\"; valid: script, token"))),
        }
        Ok(())
    }
}
