//! The log backend of every vpnsyncd process: stderr in the foreground (-d),
//! syslog(3) (facility daemon) otherwise, like OpenBSD's log.c.
//!
//! syslog is opened with `LOG_NDELAY` before a child chroots, so that the
//! socket to the log daemon is already connected when the filesystem is gone
//! (on OpenBSD syslog(3) uses sendsyslog(2) and needs no socket at all).
//! Each line is prefixed with the process name ("engine: ...") so that the
//! parent and its children can be told apart in one log.

use std::ffi::CString;
use std::io::Write;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    foreground: bool,
    procname: &'static str,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// The level for a count of -v flags: info, debug, then trace.
pub fn level_for(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

extern "C" {
    /// tzset(3): not in the libc crate.
    fn tzset();
}

/// Installs the logger once per process. `procname` tags every line.
pub fn init(foreground: bool, verbose: u8, procname: &'static str) {
    if !foreground {
        // The identity string must outlive every syslog call.
        static IDENT: &std::ffi::CStr = c"vpnsyncd";
        // SAFETY: IDENT is a static NUL-terminated string.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, libc::LOG_DAEMON) };
        // syslog(3) formats a local time; glibc reads /etc/localtime on the
        // first call. Read it now, before a child chroots and its filter
        // forbids opening files.
        // SAFETY: tzset has no arguments; no other thread runs yet.
        unsafe { tzset() };
    }
    if LOGGER.set(Logger { foreground, procname }).is_ok() {
        let _ = log::set_logger(LOGGER.get().expect("just set"));
    }
    set_verbose(verbose);
}

/// Changes the verbosity at run time (`vpnsyncctl log verbose|brief`).
pub fn set_verbose(verbose: u8) {
    log::set_max_level(level_for(verbose));
}

impl Log for Logger {
    /// Libraries (rustls) are chatty below warnings: their debug output
    /// shows only at the trace level (-vv), ours from -v on.
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        let ours = m.target().starts_with("vpnsyncd");
        m.level() <= log::max_level()
            && (ours || m.level() <= log::Level::Warn || log::max_level() == LevelFilter::Trace)
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if self.foreground {
            // stderr is unbuffered: one write_all of one buffer is one
            // write(2), so lines of the parent and its children, which
            // share the descriptor, never interleave.
            let _ = std::io::stderr().lock().write_all(&stderr_line(self.procname, r.args()));
            return;
        }
        let line = format!("{}: {}", self.procname, r.args());
        let prio = match r.level() {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        let msg = CString::new(line.replace('\0', "\\0")).expect("NULs were replaced");
        // SAFETY: a constant "%s" format with one NUL-terminated argument.
        unsafe { libc::syslog(prio, c"%s".as_ptr(), msg.as_ptr()) };
    }

    fn flush(&self) {}
}

/// One log line for stderr, newline included, in one buffer.
fn stderr_line(procname: &str, args: &std::fmt::Arguments<'_>) -> Vec<u8> {
    format!("{procname}: {args}\n").into_bytes()
}

/// Logs at error level and exits 1, like OpenBSD's fatalx().
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {{
        log::error!("fatal: {}", format_args!($($arg)*));
        std::process::exit(1)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and its newline leave in one buffer (one write), even
    /// when the message itself has several arguments.
    #[test]
    fn a_line_is_one_buffer() {
        let (n, what) = (3, "sessions");
        assert_eq!(stderr_line("engine", &format_args!("{n} {what} up")), b"engine: 3 sessions up\n");
    }
}
