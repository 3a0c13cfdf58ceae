//! Username/password checks, in-process: a 2.6 test client with
//! `auth-user-pass` against a real `Server`, the parent played by the test
//! (it reads `Server::checks.out` and answers with `on_auth_verdict`).

use super::*;
use vpnsyncd_common::auth::AuthVerdict;

const PASSWORD: &str = "password script \"/etc/vpnsyncd/checkpw\" timeout 2\n";

fn lab(extra: &str) -> Lab {
    lab_with(extra, "")
}

fn lab_with(extra: &str, more: &str) -> Lab {
    lab_as(&format!("{extra}{more}"), false)
}

/// `no_cert`: a password-only client, without `cert`/`key`.
fn lab_as(conf: &str, no_cert: bool) -> Lab {
    let k = static_key(7);
    let server = server(&format!("tls-auth \"/k/ta.key\" direction 0\n{conf}"), Some(&k));
    let opts = ClientOptions {
        user_pass: ("bob".into(), "s3cret".into()),
        tls: super::test_tls(false, no_cert),
        ..ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1))
    };
    Lab::new(server, opts, CLEAN, CLEAN, 3)
}

/// Runs until the server asks the parent; returns the request id after
/// checking what it carries.
fn asked(lab: &mut Lab) -> u64 {
    asked_with(lab, "s3cret")
}

fn asked_with(lab: &mut Lab, password: &str) -> u64 {
    assert!(lab.run_until(Duration::from_secs(5), |l| !l.server.checks.out.is_empty()), "no check asked");
    let c = lab.server.checks.out.remove(0);
    assert_eq!((&c.username[..], &c.password[..]), (&b"bob"[..], password.as_bytes()));
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
    assert_eq!(crate::status::rows(&lab.server, lab.now)[0].username.as_deref(), Some("bob"), "the status file's user");
    assert_eq!(lab.exchange(10, 1), (10, 10));
}

/// A key-method message over 2 KB (a password of 4,095 bytes, the most the
/// parser takes with its NUL) is read whole: it used to be cut at 2 KB and
/// end the session.
#[test]
fn a_password_of_4_kb_reaches_the_check() {
    let mut lab = lab(PASSWORD);
    let long = "p".repeat(4095);
    lab.client.opts.user_pass.1 = long.clone();
    let id = asked_with(&mut lab, &long);
    answer(&mut lab, id, true);
    lab.connect(Duration::from_secs(5));
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

const TOKEN: &str = "password token lifetime 600\n";

/// The token the server pushed, which the client (as a stock one) sends
/// as its password from then on.
fn use_pushed_token(lab: &mut Lab) -> String {
    let p = lab.client.pushed.clone().expect("pushed");
    let t = p.options.iter().find_map(|o| o.strip_prefix("auth-token ")).expect("auth-token pushed").to_string();
    assert_eq!(lab.client.opts.user_pass.1, t, "the client took the token as its password");
    t
}

/// The tokens pushed so far, in order (the first push's and each renewal's).
fn tokens_pushed(lab: &Lab) -> Vec<String> {
    let tokens = lab.client.messages.iter().filter(|m| m.starts_with("PUSH_REPLY"));
    tokens.flat_map(|m| m.split(',').filter_map(|o| o.strip_prefix("auth-token ")).map(String::from)).collect()
}

fn connected_with_token(lab: &mut Lab) -> String {
    let id = asked(lab);
    answer(lab, id, true);
    lab.connect(Duration::from_secs(5));
    use_pushed_token(lab)
}

#[test]
fn a_token_spares_the_check_on_every_renegotiation() {
    let mut lab = lab(&format!("{PASSWORD}{TOKEN}"));
    connected_with_token(&mut lab);
    for _ in 0..5 {
        lab.run(Duration::from_secs(3));
        client_renegotiates(&mut lab, Duration::from_secs(10));
    }
    assert!(lab.server.checks.out.is_empty(), "the parent was never asked again");
    assert_eq!(lab.info().key_id, 5);
    assert_eq!(lab.exchange(10, 2), (10, 10));
    let tokens = tokens_pushed(&lab);
    assert_eq!(tokens.len(), 6, "one with the push, one renewal per renegotiation: {tokens:?}");
    assert_eq!(lab.client.opts.user_pass.1, tokens[5], "the client holds the newest");
}

/// auth-gen-token renewal: lifetime 60 s, a renegotiation every 20 s for
/// five minutes; each brings a token issued at that renegotiation, so the
/// user is never asked again though the session outlives the first token
/// five times. A client that then stays away past the lifetime is asked.
#[test]
fn renewed_tokens_outlive_the_lifetime_and_an_old_one_is_refused() {
    let mut lab = lab_with(&format!("{PASSWORD}password token lifetime 60\n"), "keepalive 10 900\n");
    let first = connected_with_token(&mut lab);
    let start = lab.now.unix;
    for round in 1..=15 {
        lab.run(Duration::from_secs(20));
        client_renegotiates(&mut lab, Duration::from_secs(5));
        let issued = lab.server.sessions().next().unwrap().auth.token_issued.unwrap();
        assert!(issued + 5 >= lab.now.unix && issued > start, "round {round}: renewed at the renegotiation, {issued}");
        assert_eq!(lab.server.client_count(), 1, "round {round}");
    }
    assert!(lab.now.unix - start >= 300, "five minutes: {}", lab.now.unix - start);
    assert!(lab.server.checks.out.is_empty(), "the parent was never asked again");
    let tokens = tokens_pushed(&lab);
    assert_eq!(tokens.len(), 16, "{tokens:?}");
    assert!(tokens.windows(2).all(|w| w[0] != w[1]), "each renewal is a new token");
    // The lab server's token key (testclient's `server`), lifetime 60 s.
    let key = crate::token::TokenKey::new(&[0x42; 32], 60).unwrap();
    assert_eq!(key.check(first.as_bytes(), "bob", "alice", lab.now.unix), None, "the first one expired long ago");
    assert!(key.check(tokens[15].as_bytes(), "bob", "alice", lab.now.unix).is_some());
    assert_eq!(lab.exchange(10, 4), (10, 10));

    // Away longer than the lifetime: the token it holds goes to the check.
    let held = lab.client.opts.user_pass.1.clone();
    lab.run(Duration::from_secs(61));
    lab.client.renegotiate(lab.now);
    lab.client_to_link();
    let id = asked_with(&mut lab, &held);
    answer(&mut lab, id, false);
    assert!(lab.run_until(Duration::from_secs(2), |l| l.client.messages.iter().any(|m| m == "AUTH_FAILED")));
    assert_eq!(lab.server.client_count(), 0);
}

#[test]
fn a_forged_or_expired_token_goes_to_the_check_and_can_be_refused() {
    let mut lab = lab(&format!("{PASSWORD}{TOKEN}"));
    let t = connected_with_token(&mut lab);
    // One hex digit changed: not ours.
    let last = if t.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &t[..t.len() - 1]);
    lab.client.opts.user_pass.1 = forged.clone();
    lab.client.renegotiate(lab.now);
    lab.client_to_link();
    let id = asked_with(&mut lab, &forged);
    answer(&mut lab, id, false);
    assert!(lab.run_until(Duration::from_secs(2), |l| l.client.messages.iter().any(|m| m == "AUTH_FAILED")));
    assert_eq!(lab.server.client_count(), 0);

    // Expired: the genuine token, past its 600 s.
    let mut lab = lab_with(&format!("{PASSWORD}{TOKEN}"), "keepalive 10 900\n");
    let t = connected_with_token(&mut lab);
    lab.run(Duration::from_secs(601));
    lab.client.renegotiate(lab.now);
    lab.client_to_link();
    let id = asked_with(&mut lab, &t);
    answer(&mut lab, id, true);
    lab.run(Duration::from_secs(2));
    assert_eq!(lab.server.client_count(), 1, "a fresh check let it stay");
}

/// After a takeover, the new master checks the token itself: the user is
/// not asked again and the parent of neither member runs the script.
#[test]
fn a_second_server_accepts_the_token_after_a_takeover() {
    let extra = format!("{PASSWORD}{TOKEN}");
    let opts = ClientOptions {
        user_pass: ("bob".into(), "s3cret".into()),
        ..ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1))
    };
    let mut lab = Lab::new(member_with(1, &extra), opts, CLEAN, CLEAN, 11);
    lab.server.set_role(lab.now, Role::Master);
    let pushed = connected_with_token(&mut lab);
    let mut backup = member_with(2, &extra);
    backup.set_role(lab.now, Role::Backup);
    lab.run(Duration::from_millis(400));
    sync(&mut lab.server, &mut backup, lab.now);
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    assert_eq!(lab.server.sessions().next().unwrap().auth.username.as_deref(), Some("bob"), "the user travelled");
    // The takeover's own renegotiation (rekey window), then the client's.
    lab.run(Duration::from_secs(61));
    assert!(lab.info().key_id >= 1, "renegotiated on the new master");
    client_renegotiates(&mut lab, Duration::from_secs(10));
    assert!(lab.server.checks.out.is_empty(), "no check on the new master");
    assert_eq!(lab.server.client_count(), 1);
    assert_eq!(lab.exchange(10, 3), (10, 10));
    // The new master renewed the token on its renegotiations; a
    // PUSH_REQUEST it answers carries the one the client holds.
    let held = lab.client.opts.user_pass.1.clone();
    assert_ne!(held, pushed, "renewed by the new master");
    let replies = lab.client.push_replies;
    let now = lab.now;
    lab.client.send_message(now, "PUSH_REQUEST");
    lab.client_to_link();
    assert!(lab.run_until(Duration::from_secs(5), |l| l.client.push_replies > replies));
    assert!(lab.client.messages.iter().rev().any(|m| m.contains(&format!("auth-token {held}"))), "same token");
    // The renewal's issue time is in the records the new master sends.
    let issued = lab.server.sessions().next().unwrap().auth.token_issued;
    let mut third = member_with(3, &extra);
    third.set_role(lab.now, Role::Backup);
    sync(&mut lab.server, &mut third, lab.now);
    assert_eq!(third.sessions().next().unwrap().auth.token_issued, issued);
}

fn certless(conf: &str) -> Lab {
    lab_as(conf, true)
}

#[test]
fn verify_client_cert_none_and_optional_admit_by_password_alone() {
    for mode in ["none", "optional"] {
        let mut lab = certless(&format!("{PASSWORD}verify-client-cert {mode}\n"));
        assert!(lab.run_until(Duration::from_secs(5), |l| !l.server.checks.out.is_empty()), "{mode}: no check");
        let c = lab.server.checks.out.remove(0);
        assert_eq!(c.common_name, crate::session::NO_CERTIFICATE, "{mode}");
        answer(&mut lab, c.id, true);
        lab.connect(Duration::from_secs(5));
        assert_eq!(lab.info().common_name, "UNDEF", "{mode}");
        assert_eq!(lab.info().username, "bob", "{mode}");
    }
    // Optional still verifies and names a client that has a certificate.
    let mut lab = lab(&format!("{PASSWORD}verify-client-cert optional\n"));
    let id = asked(&mut lab);
    answer(&mut lab, id, true);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.info().common_name, "alice");
}

#[test]
fn a_client_without_certificate_is_refused_by_default() {
    let mut lab = certless(PASSWORD);
    lab.run(Duration::from_secs(5));
    assert!(lab.server.checks.out.is_empty(), "no password check for a client the TLS handshake refused");
    assert!(!lab.client.connected());
    assert!(lab.server.client_infos().is_empty());
}
