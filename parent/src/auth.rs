//! Password checks for the engine, which is chrooted and cannot run
//! anything: each `AuthCheck` becomes a run of the `password script`, with
//! OpenVPN's `auth-user-pass-verify SCRIPT via-file` convention so that
//! existing scripts (LDAP, RADIUS, OTP) work unchanged:
//!
//! - a file holding the username and the password on two lines, mode
//!   0600 in a directory only root can enter, removed afterwards; its path
//!   is the script's last argument;
//! - the environment has `username`, `common_name`, `untrusted_ip`,
//!   `untrusted_port` and `script_type=user-pass-verify`;
//! - exit status 0 accepts, anything else refuses.
//!
//! `password pam` and `password bsdauth` run the same way, with this very
//! binary re-executed as the helper (`vpnsyncd -A pam SERVICE`, see
//! [`helper_main`]): the credentials go to it on a pipe, never a file, and
//! it answers with its exit status and PAM's (or login_*'s) words on
//! stdout. A PAM module that hangs (an LDAP server away) is killed at the
//! timeout like a script, and the library never runs in the parent's own
//! address space, which holds every key.
//!
//! Checks run as child processes, in their own process group; the parent
//! polls them from its loop and never waits on one, and kills the whole
//! group of a check that passes its timeout. The password is never
//! logged; one line per check names the user, the peer and the outcome.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use vpnsyncd_common::auth::{AuthCheck, AuthVerdict};
use vpnsyncd_common::secret::Secret;
use vpnsyncd_config::PasswordCheck;
use zeroize::Zeroizing;

/// Where the credential files go: root's alone (mode 0700).
pub const DEFAULT_DIR: &str = "/var/run/vpnsyncd-auth";
/// Scripts running at once at most; the engine queues no more than this
/// either, so only a misbehaving engine meets the limit.
pub const MAX_RUNNING: usize = 256;

/// A check under way.
struct Running {
    id: u64,
    child: std::process::Child,
    /// The script's credential file, removed when it ends.
    file: Option<PathBuf>,
    /// The helper's answer (PAM's words); `None` for a script.
    answer: Option<ChildStdout>,
    deadline: Instant,
    /// For the log line: the user and the peer, never the password.
    who: String,
}

/// The password checks of the parent under way.
pub struct Scripts {
    dir: PathBuf,
    /// This binary, re-executed as the PAM / BSD auth helper.
    helper: PathBuf,
    running: Vec<Running>,
}

impl Scripts {
    pub fn new(dir: impl Into<PathBuf>, helper: impl Into<PathBuf>) -> Scripts {
        Scripts { dir: dir.into(), helper: helper.into(), running: Vec::new() }
    }

    /// Starts a check by `how`; an immediate refusal (the check cannot be
    /// started, too many runs) is returned as the verdict.
    pub fn start(&mut self, c: &AuthCheck, how: &PasswordCheck, now: Instant) -> Option<AuthVerdict> {
        let user = String::from_utf8_lossy(&c.username).into_owned();
        let who = format!("user \"{}\" from {}", user.escape_debug(), c.peer);
        let refuse = |why: String| {
            log::warn!("password check: {who} refused ({why})");
            Some(AuthVerdict { id: c.id, accepted: false, reason: why })
        };
        if self.running.len() >= MAX_RUNNING {
            return refuse(format!("{MAX_RUNNING} checks already running"));
        }
        let deadline = now + Duration::from_secs(how.timeout().into());
        let script = match how {
            PasswordCheck::Script { path, .. } => path,
            PasswordCheck::Pam { service, .. } => {
                return self.start_helper(c, &["pam", service], deadline, who.clone()).err().and_then(refuse);
            }
            PasswordCheck::BsdAuth { style, kind, .. } => {
                let mut args = vec!["bsdauth", kind.as_str()];
                args.extend(style.as_deref());
                return self.start_helper(c, &args, deadline, who.clone()).err().and_then(refuse);
            }
        };
        // The file has one line each: a newline inside would shift them.
        if c.username.contains(&b'\n') || c.password.contains(&b'\n') {
            return refuse("newline in the username or password".into());
        }
        let file = self.dir.join(format!("up-{}-{}", std::process::id(), c.id));
        if let Err(e) = self.write_file(&file, c) {
            let _ = fs::remove_file(&file);
            return refuse(format!("credential file {}: {e}", file.display()));
        }
        let spawned = Command::new(script)
            .arg(&file)
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("script_type", "user-pass-verify")
            .env("username", &user)
            .env("common_name", &c.common_name)
            .env("untrusted_ip", c.peer.ip().to_string())
            .env("untrusted_port", c.peer.port().to_string())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => {
                self.running.push(Running { id: c.id, child, file: Some(file), answer: None, deadline, who });
                None
            }
            Err(e) => {
                let _ = fs::remove_file(&file);
                refuse(format!("script {}: {e}", script.display()))
            }
        }
    }

    /// Starts the helper (`vpnsyncd -A ARGS`) and writes it the username
    /// and password, NUL-separated, on its stdin.
    fn start_helper(&mut self, c: &AuthCheck, args: &[&str], deadline: Instant, who: String) -> Result<(), String> {
        if c.username.contains(&0) || c.password.contains(&0) {
            return Err("NUL in the username or password".into());
        }
        if c.username.len() + 1 + c.password.len() > crate::auth_helper::MAX_INPUT {
            return Err("username and password too long".into());
        }
        let mut child = Command::new(&self.helper)
            .arg("-A")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("helper {}: {e}", self.helper.display()))?;
        let mut text = Zeroizing::new(Vec::with_capacity(c.username.len() + c.password.len() + 1));
        text.extend_from_slice(&c.username);
        text.push(0);
        text.extend_from_slice(&c.password);
        // At most MAX_INPUT, below a pipe's buffer (16 KiB on OpenBSD,
        // 64 KiB on Linux): the write does not block; dropping stdin
        // closes it, the helper's end of input.
        let written = child.stdin.take().map(|mut i| i.write_all(&text));
        // Read once the helper ended, without waiting: a process a PAM
        // module left behind may hold the pipe open, and the helper's line
        // is in the pipe's buffer already.
        let answer = child.stdout.take().filter(|o| {
            use nix::fcntl::{fcntl, FcntlArg, OFlag};
            fcntl(o, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok()
        });
        let running = Running { id: c.id, child, file: None, answer, deadline, who };
        if let Some(Err(e)) = written {
            let mut r = running;
            let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGKILL);
            let _ = r.child.wait();
            return Err(format!("helper input: {e}"));
        }
        self.running.push(running);
        Ok(())
    }

    fn write_file(&self, file: &Path, c: &AuthCheck) -> io::Result<()> {
        DirBuilder::new().mode(0o700).recursive(true).create(&self.dir)?;
        // An existing directory keeps its mode: make sure it is root's alone.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(file)?;
        let mut text = Zeroizing::new(Vec::with_capacity(c.username.len() + c.password.len() + 2));
        text.extend_from_slice(&c.username);
        text.push(b'\n');
        text.extend_from_slice(&c.password);
        text.push(b'\n');
        f.write_all(&text)
    }

    /// The verdicts of the runs that ended or timed out (killed) by `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<AuthVerdict> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            let outcome = match r.child.try_wait() {
                Ok(Some(status)) => Some(match r.answer.take() {
                    Some(out) => helper_verdict(status, out),
                    None => status_verdict(status),
                }),
                Ok(None) if now >= r.deadline => {
                    let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGKILL);
                    let _ = r.child.wait();
                    Some((false, "timed out, killed".to_string()))
                }
                Ok(None) => None,
                Err(e) => Some((false, format!("wait: {e}"))),
            };
            match outcome {
                Some((accepted, reason)) => {
                    let r = self.running.swap_remove(i);
                    if let Some(f) = &r.file {
                        let _ = fs::remove_file(f);
                    }
                    let verdict = if accepted { "accepted" } else { "refused" };
                    log::info!("password check: {} {verdict} ({reason})", r.who);
                    done.push(AuthVerdict { id: r.id, accepted, reason });
                }
                None => i += 1,
            }
        }
        done
    }

    /// How long the parent may sleep before the next run must be looked
    /// at: runs are polled, not waited for.
    pub fn wait(&self) -> Option<Duration> {
        (!self.running.is_empty()).then_some(Duration::from_millis(50))
    }
}

/// Kills what still runs (at shutdown) and removes its files.
impl Drop for Scripts {
    fn drop(&mut self) {
        for r in &mut self.running {
            let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGKILL);
            let _ = r.child.wait();
            if let Some(f) = &r.file {
                let _ = fs::remove_file(f);
            }
        }
    }
}

/// The key of `password token`, for the engine: derived from the sync
/// key, which every member shares, so each checks the others' tokens
/// after a takeover; a standalone server derives it from its private key,
/// so tokens survive a restart. Never the key itself: the engine must not
/// hold what seals the sync traffic.
pub fn token_key(sync: Option<&[u8]>, server_key: &[u8]) -> Secret {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(sync.unwrap_or(server_key)).expect("any key length");
    m.update(b"vpnsyncd auth-token key v1");
    Secret::new(m.finalize().into_bytes().to_vec())
}

fn status_verdict(s: ExitStatus) -> (bool, String) {
    match (s.code(), s.signal()) {
        (Some(0), _) => (true, "script exit 0".into()),
        (Some(n), _) => (false, format!("script exit {n}")),
        (None, Some(sig)) => (false, format!("script killed by signal {sig}")),
        (None, None) => (false, "script ended without a status".into()),
    }
}

/// The helper's verdict: exit 0 accepts; its one line says why (PAM's
/// error string), bounded so that a runaway helper cannot flood the log.
/// `out` is non-blocking: what is not there yet is not waited for.
fn helper_verdict(s: ExitStatus, out: ChildStdout) -> (bool, String) {
    let mut said = Vec::new();
    let _ = out.take(MAX_ANSWER).read_to_end(&mut said);
    let said = String::from_utf8_lossy(&said);
    let said = said.lines().next().unwrap_or_default().trim();
    match (s.code(), said.is_empty()) {
        (Some(0), _) => (true, if said.is_empty() { "accepted".into() } else { said.to_string() }),
        (_, false) => (false, said.to_string()),
        _ => status_verdict(s),
    }
}

/// The longest answer read from a helper.
const MAX_ANSWER: u64 = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_key_is_the_clusters_and_not_the_sync_key() {
        let a = token_key(Some(b"sync"), b"server A");
        assert_eq!(a, token_key(Some(b"sync"), b"server B"), "every member derives the same");
        assert_ne!(a, token_key(Some(b"other"), b"server A"));
        assert_ne!(&a[..], b"sync");
        assert_eq!(token_key(None, b"server A").len(), 32);
        assert_ne!(token_key(None, b"server A"), token_key(None, b"server B"));
    }

    /// Where no helper is: the script tests never start one.
    const NO_HELPER: &str = "/nonexistent/vpnsyncd";

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("vpnsyncd-auth-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("checkpw");
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn check(id: u64, user: &str, pw: &str) -> AuthCheck {
        AuthCheck {
            id,
            username: Secret::new(user.as_bytes().to_vec()),
            password: Secret::new(pw.as_bytes().to_vec()),
            common_name: "client1".into(),
            peer: "192.0.2.5:40000".parse().unwrap(),
        }
    }

    /// Polls until every run ended (bounded: 10 s).
    fn finish(s: &mut Scripts, n: usize) -> Vec<AuthVerdict> {
        let end = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < end {
            got.extend(s.poll(Instant::now()));
            std::thread::sleep(Duration::from_millis(10));
        }
        got.sort_by_key(|v| v.id);
        got
    }

    #[test]
    fn the_script_sees_the_openvpn_convention_and_its_exit_decides() {
        let t = tmp("conv");
        let log = t.0.join("seen");
        // Accepts only bob/pw1, and records what it saw.
        let sh = script(
            &t.0,
            &format!(
                "f=\"$1\"; u=$(sed -n 1p \"$f\"); p=$(sed -n 2p \"$f\"); m=$(stat -c %a \"$f\")\n\
                 echo \"$script_type $username $common_name $untrusted_ip $untrusted_port $u $m\" >> {}\n\
                 [ \"$u\" = bob ] && [ \"$p\" = pw1 ] && exit 0; exit 3",
                log.display()
            ),
        );
        let dir = t.0.join("creds");
        let mut s = Scripts::new(&dir, NO_HELPER);
        let now = Instant::now();
        let how = PasswordCheck::Script { path: sh, timeout: 5 };
        assert!(s.start(&check(1, "bob", "pw1"), &how, now).is_none());
        assert!(s.start(&check(2, "bob", "wrong"), &how, now).is_none());
        let got = finish(&mut s, 2);
        assert_eq!(
            got,
            vec![
                AuthVerdict { id: 1, accepted: true, reason: "script exit 0".into() },
                AuthVerdict { id: 2, accepted: false, reason: "script exit 3".into() },
            ]
        );
        let seen = fs::read_to_string(&log).unwrap();
        assert_eq!(seen.lines().next().unwrap(), "user-pass-verify bob client1 192.0.2.5 40000 bob 600");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "credential files removed");
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_script_past_its_timeout_is_killed_with_its_children() {
        let t = tmp("timeout");
        let marker = t.0.join("survived");
        let sh = script(&t.0, &format!("(sleep 3; touch {}) & sleep 30", marker.display()));
        let mut s = Scripts::new(t.0.join("creds"), NO_HELPER);
        let started = Instant::now();
        assert!(s.start(&check(5, "eve", "x"), &PasswordCheck::Script { path: sh, timeout: 1 }, started).is_none());
        let got = finish(&mut s, 1);
        assert_eq!(got, vec![AuthVerdict { id: 5, accepted: false, reason: "timed out, killed".into() }]);
        assert!(started.elapsed() < Duration::from_millis(2500), "killed, not waited for: {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(3500) - started.elapsed());
        assert!(!marker.exists(), "the script's own children were killed too");
        assert_eq!(fs::read_dir(t.0.join("creds")).unwrap().count(), 0);
    }

    /// `password pam` and `bsdauth` run the helper: its arguments name
    /// the check, the credentials come on stdin (no file), its exit status
    /// decides and its line is the reason.
    #[test]
    fn pam_and_bsdauth_checks_run_the_helper_with_the_credentials_on_stdin() {
        let t = tmp("helper");
        let helper = script(
            &t.0,
            "args=\"$*\"; u=$(tr '\\000' ' ')\n\
             [ \"$u\" = 'bob pw1' ] && { echo \"$args: accepted\"; exit 0; }\n\
             echo \"$args: Authentication failure\"; exit 1",
        );
        let dir = t.0.join("creds");
        let mut s = Scripts::new(&dir, &helper);
        let now = Instant::now();
        let pam = PasswordCheck::Pam { service: "vpn".into(), timeout: 5 };
        let bsd = PasswordCheck::BsdAuth { style: Some("passwd".into()), kind: "auth-vpn".into(), timeout: 5 };
        assert!(s.start(&check(1, "bob", "pw1"), &pam, now).is_none());
        assert!(s.start(&check(2, "bob", "wrong"), &pam, now).is_none());
        assert!(s.start(&check(3, "bob", "pw1"), &bsd, now).is_none());
        let got = finish(&mut s, 3);
        let v = |id, accepted, reason: &str| AuthVerdict { id, accepted, reason: reason.into() };
        assert_eq!(
            got,
            vec![
                v(1, true, "-A pam vpn: accepted"),
                v(2, false, "-A pam vpn: Authentication failure"),
                v(3, true, "-A bsdauth auth-vpn passwd: accepted"),
            ]
        );
        assert!(!dir.exists(), "no credential file for a helper");
        // A process the helper leaves behind, holding its stdout, does not
        // hold the verdict (nor the parent's loop).
        let lingering = t.0.join("lingering");
        fs::write(&lingering, "#!/bin/sh\ncat >/dev/null; (sleep 5) & echo 'PAM service vpn: accepted'\n").unwrap();
        fs::set_permissions(&lingering, fs::Permissions::from_mode(0o755)).unwrap();
        let mut l = Scripts::new(&dir, &lingering);
        let started = Instant::now();
        assert!(l.start(&check(6, "bob", "pw1"), &pam, started).is_none());
        assert_eq!(finish(&mut l, 1), vec![v(6, true, "PAM service vpn: accepted")]);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let v = s.start(&check(4, "bob", "p\0w"), &pam, now).unwrap();
        assert!(!v.accepted && v.reason.contains("NUL"), "{v:?}");
        let long = "x".repeat(crate::auth_helper::MAX_INPUT);
        let v = s.start(&check(7, "bob", &long), &pam, now).unwrap();
        assert!(!v.accepted && v.reason.contains("too long"), "{v:?}");
        let mut s = Scripts::new(&dir, t.0.join("missing"));
        let v = s.start(&check(5, "bob", "pw1"), &pam, now).unwrap();
        assert!(!v.accepted && v.reason.contains("missing"), "{v:?}");
    }

    #[test]
    fn checks_that_cannot_run_are_refused_at_once() {
        let t = tmp("fail");
        let mut s = Scripts::new(t.0.join("creds"), NO_HELPER);
        let now = Instant::now();
        let how = |p: &Path| PasswordCheck::Script { path: p.into(), timeout: 1 };
        let v = s.start(&check(7, "bob", "pw"), &how(&t.0.join("missing")), now).unwrap();
        assert!(!v.accepted && v.reason.contains("missing"), "{v:?}");
        let v = s.start(&check(8, "bob\nroot", "pw"), &how(Path::new("/bin/true")), now).unwrap();
        assert!(!v.accepted && v.reason.contains("newline"), "{v:?}");
        assert_eq!(fs::read_dir(t.0.join("creds")).unwrap().count(), 0);
    }
}
