//! Hostile configurations: files that never end, block or are huge, macros
//! that double, more push options than a client takes, bytes that are not
//! UTF-8. Each gets its exact `file:line:col` error, within a second of
//! CPU time (see `bounded`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use vpnsyncd_config::{load, parse_str, KeyFile, MAX_PUSH_ROUTES};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

/// A directory of its own per test, removed when the test ends (even when
/// it fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("vpnsyncd-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a hostile input may cost the loader: a blow-up (quadratic,
/// exponential, reading an endless file) costs far more than this CPU
/// time, and the wall time catches a blocking read or a wait.
const CPU_LIMIT: Duration = Duration::from_secs(1);
const WALL_LIMIT: Duration = Duration::from_secs(10);

/// The CPU time the calling thread has used: unlike wall time, what the
/// other processes of a loaded machine do hardly changes it.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}", std::io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `work` on a thread of its own and returns its result, failing if
/// that thread used more than `cpu` of CPU time or did not finish within
/// `wall` (it is then left behind, and the test fails instead of hanging).
fn bounded_by<T: Send + 'static>(cpu: Duration, wall: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let start = thread_cpu_time();
        let out = work();
        let _ = tx.send((out, thread_cpu_time() - start));
    });
    match rx.recv_timeout(wall) {
        Ok((out, used)) => {
            assert!(used <= cpu, "used {used:?} of CPU time, more than {cpu:?}");
            out
        }
        Err(e) => panic!("not done within {wall:?} ({e})"),
    }
}

fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    bounded_by(CPU_LIMIT, WALL_LIMIT, work)
}

/// The errors of loading `path` (configuration and key files), within
/// the bounds.
fn load_errors(path: &Path) -> String {
    let path = path.to_owned();
    bounded(move || load(&path, &[]).expect_err("a hostile configuration is refused").to_string())
}

/// The error of parsing `text` as test.conf, within the bounds.
fn parse_error(text: String) -> String {
    bounded(move || parse_str("test.conf", &text, &[]).unwrap_err().to_string())
}

#[test]
#[should_panic(expected = "of CPU time, more than")]
fn the_bound_catches_work() {
    bounded_by(Duration::from_millis(5), WALL_LIMIT, || {
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - start < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        x
    });
}

#[test]
#[should_panic(expected = "not done within")]
fn the_bound_catches_waiting() {
    bounded_by(CPU_LIMIT, Duration::from_millis(50), || std::thread::sleep(Duration::from_secs(2)));
}

fn first_line(e: &str) -> &str {
    e.lines().next().unwrap_or_default()
}

#[test]
fn doubling_macros_stop_at_the_string_limit() {
    let mut text = String::from("m0 = \"xxxxxxxx\"\n");
    for i in 1..40 {
        text += &format!("m{i} = \"$m{p}$m{p}\"\n", p = i - 1);
    }
    let e = parse_error(text);
    // m14 would be 8 * 2^14 = 128 KiB: its second use of m13 passes 64 KiB.
    assert_eq!(first_line(&e), "test.conf:15:12: the string passes 64 KiB where macro \"m13\" is expanded");
}

#[test]
fn nested_word_macros_stop_at_the_total_limit() {
    let mut text = String::from("a0 = \"10.0.0.0/8 10.0.0.0/8\"\n");
    for i in 1..16 {
        text += &format!("a{i} = \"\\$a{p} \\$a{p}\"\n", p = i - 1);
    }
    // Each use of a15 makes 2^16 words of 10 bytes: the second passes 1 MiB.
    text += "push route $a15\npush route $a15\n";
    let e = parse_error(text);
    assert!(e.contains("test.conf:18:12: macros expand to more than 1 MiB in all\n"), "{e}");
}

#[test]
fn endless_files_are_refused() {
    let d = TempDir::new("zero");
    let ca = d.write("ca.conf", "ca \"/dev/zero\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n");
    assert_eq!(
        load_errors(&ca),
        format!(
            "{}:1:1: ca \"/dev/zero\": a certificate, CA or CRL file is needed here, and this is a character device\n",
            ca.display()
        )
    );
    let inc = d.write("inc.conf", format!("{KEYS}include \"/dev/zero\"\n"));
    assert_eq!(
        load_errors(&inc),
        format!(
            "{}:4:9: include \"/dev/zero\": a configuration file is needed here, and this is a character device\n",
            inc.display()
        )
    );
    let tc = d.write("tc.conf", format!("{KEYS}tls-crypt \"/dev/zero\"\n"));
    assert_eq!(
        load_errors(&tc),
        format!(
            "{}:4:1: tls-crypt \"/dev/zero\": a static key file is needed here, and this is a character device\n",
            tc.display()
        )
    );
    let tc2 = d.write("tc2.conf", format!("{KEYS}tls-crypt-v2 \"/dev/zero\"\n"));
    assert_eq!(
        load_errors(&tc2),
        format!(
            "{}:4:1: tls-crypt-v2 \"/dev/zero\": a static key file is needed here, and this is a character device\n",
            tc2.display()
        )
    );
    let sync = d.write(
        "sync.conf",
        format!("{KEYS}sync {{\n\trole vip 198.18.0.10 interface eth0\n\tpeer 198.18.0.2\n\tkey \"/dev/zero\"\n\tmember 1\n}}\n"),
    );
    assert_eq!(
        load_errors(&sync),
        format!(
            "{}:7:2: sync key \"/dev/zero\": a static key file is needed here, and this is a character device\n",
            sync.display()
        )
    );
}

#[test]
fn a_fifo_never_blocks() {
    let d = TempDir::new("fifo");
    let fifo = d.0.join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
    let conf = d.write("fifo.conf", format!("\n\nca \"{}\"\ncertificate \"/k/c\"\nkey \"/k/k\"\n", fifo.display()));
    assert_eq!(
        load_errors(&conf),
        format!(
            "{}:3:1: ca \"{}\": a certificate, CA or CRL file is needed here, and this is a FIFO\n",
            conf.display(),
            fifo.display()
        )
    );
    let inc = d.write("inc.conf", format!("include \"{}\"\n", fifo.display()));
    assert!(first_line(&load_errors(&inc)).ends_with("a configuration file is needed here, and this is a FIFO"));
}

#[test]
fn huge_files_are_refused_by_size() {
    let d = TempDir::new("huge");
    let ca = d.0.join("ca.crt");
    // Sparse: 50 MB that take no disk space.
    std::fs::File::create(&ca).unwrap().set_len(50_000_000).unwrap();
    let conf = d.write("ca.conf", format!("certificate \"/k/c\"\nkey \"/k/k\"\nca \"{}\"\n", ca.display()));
    assert_eq!(
        load_errors(&conf),
        format!(
            "{}:3:1: ca \"{}\": 50000000 bytes is more than the 3 MiB a certificate, CA or CRL file may have\n",
            conf.display(),
            ca.display()
        )
    );
    let domain = d.write("domain.conf", format!("{KEYS}push domain \"{}\"\n", "a".repeat(10_000_000)));
    assert_eq!(
        load_errors(&domain),
        format!(
            "{}: cannot read: {} bytes is more than the 1 MiB a configuration file may have\n",
            domain.display(),
            std::fs::metadata(&domain).unwrap().len()
        )
    );
    let routes: String = (0..100_000).map(|i| format!("push route 10.{}.{}.0/24\n", i / 256 % 256, i % 256)).collect();
    let routes = d.write("routes.conf", format!("{KEYS}{routes}"));
    assert!(load_errors(&routes).ends_with("bytes is more than the 1 MiB a configuration file may have\n"));
    // Includes share the budget of one file.
    let half = d.write("half.conf", format!("# {}\n", "x".repeat(600_000)));
    let twice = d.write("twice.conf", format!("{KEYS}include \"{0}\"\ninclude \"{0}\"\n", half.display()));
    assert_eq!(
        load_errors(&twice),
        format!(
            "{}:5:9: include \"{}\": the configuration and its includes pass 1 MiB\n",
            twice.display(),
            half.display()
        )
    );
}

#[test]
fn push_options_fit_a_client() {
    let routes: String =
        (0..=MAX_PUSH_ROUTES).map(|i| format!("push route 10.{}.{}.0/24\n", i / 256, i % 256)).collect();
    let e = parse_str("test.conf", &format!("{KEYS}{routes}"), &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("test.conf:{}:1: more than 4096 push route statements: summarise the routes\n", 4 + MAX_PUSH_ROUTES)
    );
    let dns: String = (1..=5).map(|i| format!("push dns 198.19.0.{i}\npush dns 2001:db8::{i}\n")).collect();
    let e = parse_str("test.conf", &format!("{KEYS}{dns}"), &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        "test.conf:12:1: more than 4 push dns statements for IPv4: OpenVPN clients take at most 4\n\
         test.conf:13:1: more than 4 push dns statements for IPv6: OpenVPN clients take at most 4\n"
    );
    let e = parse_str("test.conf", &format!("{KEYS}push domain \"{}\"\n", "a".repeat(300)), &[]).unwrap_err();
    assert_eq!(e.to_string(), "test.conf:4:13: the domain name is 300 bytes long, more than 253\n");
    let e = parse_str("test.conf", &format!("{KEYS}push domain \"lab,route 0.0.0.0\"\n"), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.conf:4:13: \"lab,route 0.0.0.0\" is not a domain name (labels of letters, digits, - and _, at most 63 each, joined by dots)\n"
    );
    assert!(parse_str("test.conf", &format!("{KEYS}push domain corp.example.\n"), &[]).is_ok());
}

#[test]
fn invalid_utf8_has_its_line() {
    let d = TempDir::new("utf8");
    let main = d.write("main.conf", [KEYS.as_bytes(), b"user \"caf\xe9\"\n"].concat());
    assert_eq!(
        load_errors(&main),
        format!("{}:4:10: byte 0xe9 is not UTF-8: the configuration must be UTF-8 text\n", main.display())
    );
    let inc = d.write("inc.conf", b"\n\xff\n");
    let top = d.write("top.conf", format!("{KEYS}include \"{}\"\n", inc.display()));
    assert_eq!(
        load_errors(&top),
        format!("{}:2:1: byte 0xff is not UTF-8: the configuration must be UTF-8 text\n", inc.display())
    );
}

/// A good configuration loads with its key files; missing ones are not an
/// error of the configuration (`vpnsyncd -n` warns, a start refuses).
#[test]
fn key_files_are_read_or_listed_as_unreadable() {
    let d = TempDir::new("keys");
    let ca = d.write("ca.crt", "-----BEGIN CERTIFICATE-----\n");
    let conf = d
        .write("ok.conf", format!("ca \"{}\"\ncertificate \"/nonexistent/c\"\nkey \"/nonexistent/k\"\n", ca.display()));
    let l = load(&conf, &[]).unwrap();
    assert_eq!(l.keys, vec![(KeyFile::Ca, b"-----BEGIN CERTIFICATE-----\n".to_vec())]);
    let u = l.unreadable.to_string();
    assert!(u.starts_with(&format!("{}:2:1: certificate \"/nonexistent/c\": No such file", conf.display())), "{u}");
    assert_eq!(u.lines().count(), 2);
}
