//! The management socket's bounds, on real unix sockets: greeting, line
//! framing, long lines, the connection cap, quit, and slow readers.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

fn listener(tag: &str) -> (Mgmt, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("vpnsyncd-mgmt-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    (Mgmt::new(OwnedFd::from(l)), path)
}

/// Echoes each line back as OpenVPN-style SUCCESS; `quit` ends.
fn echo(line: &str) -> answer::Answer {
    answer::Answer { text: format!("SUCCESS: {line}\r\n"), quit: line == "quit" }
}

/// What the peer can read now.
fn read_now(s: &mut UnixStream) -> String {
    s.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8(out).unwrap()
}

fn connect(m: &mut Mgmt, path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    m.accept(Instant::now());
    s
}

#[test]
fn greets_and_answers_each_line_in_order() {
    let (mut m, path) = listener("lines");
    let mut s = connect(&mut m, &path);
    assert_eq!(read_now(&mut s), answer::GREETING);
    // Two lines and a half in one write, CRLF or LF; the half waits.
    s.write_all(b"one\r\ntwo\nthr").unwrap();
    m.on_ready(0, Instant::now(), echo);
    assert_eq!(read_now(&mut s), "SUCCESS: one\r\nSUCCESS: two\r\n");
    s.write_all(b"ee\n\n").unwrap();
    m.on_ready(0, Instant::now(), echo);
    assert_eq!(read_now(&mut s), "SUCCESS: three\r\nSUCCESS: \r\n");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_long_line_is_refused_and_the_next_one_served() {
    let (mut m, path) = listener("long");
    let mut s = connect(&mut m, &path);
    read_now(&mut s);
    s.write_all(&vec![b'x'; 3 * MAX_LINE]).unwrap();
    m.on_ready(0, Instant::now(), echo);
    s.write_all(&vec![b'y'; 3 * MAX_LINE]).unwrap();
    s.write_all(b"\nok\n").unwrap();
    m.on_ready(0, Instant::now(), echo);
    m.on_ready(0, Instant::now(), echo);
    assert_eq!(read_now(&mut s), format!("{TOO_LONG}SUCCESS: ok\r\n"));
    // Exactly MAX_LINE bytes still pass.
    let line = "z".repeat(MAX_LINE);
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    m.on_ready(0, Instant::now(), echo);
    assert_eq!(read_now(&mut s), format!("SUCCESS: {line}\r\n"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_ninth_connection_is_told_and_closed() {
    let (mut m, path) = listener("cap");
    let mut open: Vec<UnixStream> = (0..MAX_CONNS).map(|_| connect(&mut m, &path)).collect();
    assert_eq!(m.conns.len(), MAX_CONNS);
    let mut ninth = connect(&mut m, &path);
    assert_eq!(m.conns.len(), MAX_CONNS);
    assert_eq!(read_now(&mut ninth), FULL, "told why, then closed (EOF)");
    assert_eq!(read_now(&mut open[0]), answer::GREETING);
    // One goes; a new one is greeted.
    drop(open.remove(0));
    m.on_ready(0, Instant::now(), echo);
    m.sweep(Instant::now());
    assert_eq!(m.conns.len(), MAX_CONNS - 1);
    let mut again = connect(&mut m, &path);
    assert_eq!(read_now(&mut again), answer::GREETING);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn quit_answers_what_came_before_and_closes() {
    let (mut m, path) = listener("quit");
    let mut s = connect(&mut m, &path);
    s.write_all(b"a\nquit\nb\n").unwrap();
    m.on_ready(0, Instant::now(), echo);
    m.sweep(Instant::now());
    assert!(m.conns.is_empty());
    assert_eq!(read_now(&mut s), format!("{}SUCCESS: a\r\nSUCCESS: quit\r\n", answer::GREETING));
    let _ = std::fs::remove_file(&path);
}

/// A peer that asks for a lot and never reads: its commands stop being
/// read at the high-water mark, and it is dropped after STALL; the engine
/// never blocks on it.
#[test]
fn a_reader_that_reads_nothing_is_held_then_dropped() {
    let (mut m, path) = listener("slow");
    let s = connect(&mut m, &path);
    let mut w = s.try_clone().unwrap();
    w.write_all(&b"big\n".repeat(200)).unwrap();
    let big = |_: &str| answer::Answer { text: "x".repeat(32 << 10), quit: false };
    let t0 = Instant::now();
    for _ in 0..50 {
        m.on_ready(0, t0, big);
    }
    let c = &m.conns[0];
    assert!(c.pending() >= HIGH_WATER && c.pending() < HIGH_WATER + (32 << 10) + (1 << 20), "{}", c.pending());
    assert!(!c.input.is_empty(), "the rest of its commands wait unread");
    assert!(!c.interest().contains(nix::poll::PollFlags::POLLIN));
    m.sweep(t0 + STALL / 2);
    assert_eq!(m.conns.len(), 1, "not yet");
    m.sweep(t0 + STALL + Duration::from_secs(1));
    assert!(m.conns.is_empty(), "dropped after STALL");
    let _ = std::fs::remove_file(&path);
}
