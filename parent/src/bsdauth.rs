//! `password bsdauth`: OpenBSD's BSD Authentication, in the helper process
//! (crate::auth_helper). auth_userokay(3) runs the login_STYLE program of
//! the user's login class (login.conf(5)) for the authentication type, or
//! the style asked for when that class allows it, and says yes or no.

use std::os::raw::{c_char, c_int};

use zeroize::Zeroizing;

extern "C" {
    /// libc's BSD Authentication (bsd_auth.h): non-zero when `name` is
    /// authenticated. It clears `password` itself.
    fn auth_userokay(name: *mut c_char, style: *mut c_char, kind: *mut c_char, password: *mut c_char) -> c_int;
}

/// A NUL-terminated copy, zeroized when dropped.
fn c_string(b: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    if b.contains(&0) {
        return Err(format!("NUL in the {what}"));
    }
    let mut v = Zeroizing::new(Vec::with_capacity(b.len() + 1));
    v.extend_from_slice(b);
    v.push(0);
    Ok(v)
}

/// Asks BSD Authentication about `user` for login.conf type `kind`.
pub fn check(kind: &str, style: Option<&str>, user: &[u8], password: &[u8]) -> Result<String, String> {
    let mut name = c_string(user, "username")?;
    let mut kind_c = c_string(kind.as_bytes(), "authentication type")?;
    let mut style_c = style.map(|s| c_string(s.as_bytes(), "authentication style")).transpose()?;
    let mut pw = c_string(password, "password")?;
    let style_p = style_c.as_mut().map_or(std::ptr::null_mut(), |s| s.as_mut_ptr().cast());
    // SAFETY: every pointer is to a NUL-terminated buffer that outlives
    // the call (or null for the style, which auth_userokay allows).
    let ok =
        unsafe { auth_userokay(name.as_mut_ptr().cast(), style_p, kind_c.as_mut_ptr().cast(), pw.as_mut_ptr().cast()) };
    let what = format!("BSD auth type {kind}{}", style.map(|s| format!(" style {s}")).unwrap_or_default());
    if ok != 0 {
        Ok(format!("{what}: accepted"))
    } else {
        Err(format!("{what}: refused"))
    }
}
