//! The helper that runs one PAM or BSD Authentication check:
//! `vpnsyncd -A pam SERVICE` or `vpnsyncd -A bsdauth TYPE [STYLE]`, started
//! by the parent's check runner (crate::auth) for each client, so that the
//! library and its modules run in a fresh process the runner can kill at
//! the timeout, never in the parent's loop.
//!
//! Input on stdin: the username, a NUL, the password. Output: exit 0
//! accepts, 1 refuses; one line on stdout says why (PAM's error string),
//! never the password.

use std::io::{self, Read};

use zeroize::Zeroizing;

#[cfg(target_os = "linux")]
#[path = "pam.rs"]
mod pam;

#[cfg(target_os = "openbsd")]
#[path = "bsdauth.rs"]
mod bsdauth;

/// The most the runner sends: the engine takes a username and a password
/// of 4096 bytes each at most (engine/src/keys.rs), and the NUL between;
/// a pipe buffers more, so the runner's write never blocks.
pub const MAX_INPUT: usize = 2 * 4096 + 1;

/// The helper's `main`: `args` are those after `-A`.
pub fn helper_main(args: &[String]) -> i32 {
    let mut input = Zeroizing::new(Vec::new());
    if let Err(e) = io::stdin().take(MAX_INPUT as u64).read_to_end(&mut input) {
        println!("helper input: {e}");
        return 1;
    }
    let Some(nul) = input.iter().position(|&b| b == 0) else {
        println!("helper input without the NUL after the username");
        return 1;
    };
    match check(args, &input[..nul], &input[nul + 1..]) {
        Ok(why) => {
            println!("{why}");
            0
        }
        Err(why) => {
            println!("{why}");
            1
        }
    }
}

/// The check `args` names, on the platform that has it.
fn check(args: &[String], user: &[u8], password: &[u8]) -> Result<String, String> {
    match args {
        #[cfg(target_os = "linux")]
        [m, service] if m == "pam" => pam::check(service, user, password),
        #[cfg(target_os = "openbsd")]
        [m, kind, style @ ..] if m == "bsdauth" && style.len() <= 1 => {
            bsdauth::check(kind, style.first().map(String::as_str), user, password)
        }
        _ => Err(format!("no such check on {}: -A {}", std::env::consts::OS, args.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_this_platform_lacks_is_refused_with_its_name() {
        let args = ["radius".to_string(), "x".to_string()];
        let e = check(&args, b"bob", b"pw").unwrap_err();
        assert!(e.contains("no such check") && e.contains("-A radius x"), "{e}");
        assert!(!e.contains("pw"));
    }
}
