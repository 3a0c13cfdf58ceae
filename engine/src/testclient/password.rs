//! Username/password checks, in-process: a 2.6 test client with
//! `auth-user-pass` against a real `Server`, the parent played by the test
//! (it reads `Server::checks.out` and answers with `on_auth_verdict`).

use super::*;
use vpnsyncd_common::auth::AuthVerdict;

const PASSWORD: &str = "password script \"/etc/vpnsyncd/checkpw\" timeout 2\n";

fn lab(extra: &str) -> Lab {
    let k = static_key(7);
    let server = server(&format!("tls-auth \"/k/ta.key\" direction 0\n{extra}"), Some(&k));
    let opts = ClientOptions {
        user_pass: ("bob".into(), "s3cret".into()),
        ..ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1))
    };
    Lab::new(server, opts, CLEAN, CLEAN, 3)
}

/// Runs until the server asks the parent; returns the request id after
/// checking what it carries.
fn asked(lab: &mut Lab) -> u64 {
    assert!(lab.run_until(Duration::from_secs(5), |l| !l.server.checks.out.is_empty()), "no check asked");
    let c = lab.server.checks.out.remove(0);
    assert_eq!((&c.username[..], &c.password[..]), (&b"bob"[..], &b"s3cret"[..]));
    assert_eq!((c.common_name.as_str(), c.peer), ("alice", lab.addr));
    c.id
}

fn answer(lab: &mut Lab, id: u64, accepted: bool) {
    let now = lab.now;
    lab.server.on_auth_verdict(now, &AuthVerdict { id, accepted, reason: "script exit 1".into() });
}

#[test]
fn an_accepted_password_lets_the_client_in_and_names_the_user() {
    let mut lab = lab(PASSWORD);
    let id = asked(&mut lab);
    lab.run(Duration::from_secs(1));
    assert!(!lab.client.connected(), "no address before the verdict");
    assert!(lab.server.client_infos().is_empty() || lab.info().virtual_ip.is_empty());
    answer(&mut lab, id, true);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.client.address(), Some(Ipv4Addr::new(10, 8, 0, 2)));
    assert_eq!(lab.server.sessions().next().unwrap().auth.username.as_deref(), Some("bob"));
    assert_eq!(lab.exchange(10, 1), (10, 10));
}

#[test]
fn a_refused_password_gets_auth_failed_and_ends_the_session() {
    let mut lab = lab(PASSWORD);
    let id = asked(&mut lab);
    answer(&mut lab, id, false);
    assert!(lab.run_until(Duration::from_secs(2), |l| l.client.messages.iter().any(|m| m == "AUTH_FAILED")));
    assert_eq!(lab.server.client_count(), 0, "the session ended");
    assert!(!lab.client.connected());
}

#[test]
fn a_check_without_verdict_times_out_and_refuses() {
    let mut lab = lab(PASSWORD);
    let id = asked(&mut lab);
    let asked_at = lab.elapsed();
    assert!(lab.run_until(Duration::from_secs(5), |l| l.client.messages.iter().any(|m| m == "AUTH_FAILED")));
    let waited = lab.elapsed() - asked_at;
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "timeout 2 s, waited {waited:?}");
    assert_eq!(lab.server.client_count(), 0);
    // A late verdict finds nothing to act on.
    answer(&mut lab, id, true);
    lab.run(Duration::from_secs(1));
    assert!(!lab.client.connected());
}

#[test]
fn without_a_password_statement_credentials_are_ignored() {
    let mut lab = lab("");
    lab.connect(Duration::from_secs(5));
    assert!(lab.server.checks.out.is_empty());
    assert_eq!(lab.server.sessions().next().unwrap().auth.username, None);
}

#[test]
fn a_full_check_queue_refuses_at_once() {
    let mut lab = lab(PASSWORD);
    let peer: SocketAddr = "192.0.2.9:1".parse().unwrap();
    let far = lab.now.mono + Duration::from_secs(3600);
    let creds = || crate::auth::Credentials {
        username: vpnsyncd_common::secret::Secret::new(b"x".to_vec()),
        password: vpnsyncd_common::secret::Secret::new(b"y".to_vec()),
    };
    for i in 0..crate::auth::MAX_PENDING as u32 {
        assert!(lab.server.checks.submit((1000 + i, [1; 8]), creds(), ("x", peer), far));
    }
    lab.server.checks.out.clear();
    assert!(lab.run_until(Duration::from_secs(5), |l| l.client.messages.iter().any(|m| m == "AUTH_FAILED")));
    assert!(lab.server.checks.out.is_empty(), "nothing was sent to the parent");
    assert_eq!(lab.server.client_count(), 0);
}
