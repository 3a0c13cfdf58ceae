//! `password pam`: one Linux-PAM transaction per check, in the helper
//! process (crate::auth_helper). The conversation answers the username to
//! a prompt that echoes (PAM_PROMPT_ECHO_ON) and the password to one that
//! does not (PAM_PROMPT_ECHO_OFF), as a login prompt would; then
//! pam_authenticate and pam_acct_mgmt (an expired or locked account is
//! refused even with the right password).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nonstick::{AuthnFlags, ConversationAdapter, Transaction, TransactionBuilder};

/// What the conversation answers: the client's credentials.
struct Answers<'a> {
    user: &'a [u8],
    password: &'a [u8],
}

impl ConversationAdapter for Answers<'_> {
    fn prompt(&self, _: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
        Ok(OsString::from_vec(self.user.to_vec()))
    }

    fn masked_prompt(&self, _: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
        Ok(OsString::from_vec(self.password.to_vec()))
    }

    /// Messages meant for a person at a terminal: there is none; the
    /// verdict's error string is what the log shows.
    fn error_msg(&self, _: impl AsRef<OsStr>) {}

    fn info_msg(&self, _: impl AsRef<OsStr>) {}
}

/// Runs `service`'s auth and account stacks for `user`.
pub fn check(service: &str, user: &[u8], password: &[u8]) -> Result<String, String> {
    let mut txn = TransactionBuilder::new_with_service(service)
        .username(OsStr::from_bytes(user))
        .build(Answers { user, password }.into_conversation())
        .map_err(|e| format!("PAM service {service}: pam_start: {e}"))?;
    let flags = AuthnFlags::SILENT | AuthnFlags::DISALLOW_NULL_AUTHTOK;
    txn.authenticate(flags).map_err(|e| format!("PAM service {service}: pam_authenticate: {e}"))?;
    txn.account_management(AuthnFlags::SILENT | AuthnFlags::DISALLOW_NULL_AUTHTOK)
        .map_err(|e| format!("PAM service {service}: pam_acct_mgmt: {e}"))?;
    Ok(format!("PAM service {service}: accepted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversation_answers_the_user_in_clear_and_the_password_masked() {
        let a = Answers { user: b"bob", password: b"s3cret" };
        assert_eq!(a.prompt("login: ").unwrap(), "bob");
        assert_eq!(a.masked_prompt("Password: ").unwrap(), "s3cret");
    }

    /// A service without a file in /etc/pam.d falls to PAM's "other"
    /// stack (Debian: deny) or fails to start: refused either way, with
    /// PAM's words and never the password.
    #[test]
    fn an_unknown_service_refuses() {
        let e = check("vpnsyncd-test-no-such-service", b"nobody-here", b"pw-not-logged").unwrap_err();
        assert!(e.starts_with("PAM service vpnsyncd-test-no-such-service: pam_"), "{e}");
        assert!(!e.contains("pw-not-logged"), "{e}");
    }
}
