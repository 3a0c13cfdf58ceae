//! The canonical form of a configuration: every setting spelled out with
//! its default applied, macros expanded, one statement per line. It parses
//! back to the same `Config`, which is how the parent hands the checked
//! configuration to its children.

use std::fmt::{self, Display, Formatter};
use std::path::Path;

use crate::{Config, PasswordCheck, RoleSource, SyncTransport, Wrap};

/// A quoted string, with `"`, `\` and `$` escaped.
struct Quoted<'a>(&'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\' | '$') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

fn path(p: &Path) -> Quoted<'_> {
    // Paths come from the parser, which only makes them from UTF-8 text.
    Quoted(p.to_str().unwrap_or_default())
}

impl Display for Config {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for l in &self.listen {
            writeln!(f, "listen on {} port {}", l.ip(), l.port())?;
        }
        writeln!(f, "tun device {}", self.tun_device)?;
        writeln!(f, "client network {} pool {} - {}", self.network, self.pool.0, self.pool.1)?;
        if let Some(n6) = &self.network6 {
            writeln!(f, "client network6 {n6}")?;
        }
        writeln!(f, "max clients {}", self.max_clients)?;
        writeln!(f, "user {}", Quoted(&self.user))?;
        writeln!(f, "socket {}", path(&self.socket))?;
        writeln!(f)?;
        writeln!(f, "ca {}", path(&self.ca))?;
        writeln!(f, "certificate {}", path(&self.certificate))?;
        writeln!(f, "key {}", path(&self.key))?;
        if let Some(crl) = &self.crl {
            writeln!(f, "crl {}", path(crl))?;
        }
        match &self.wrap {
            Some(Wrap::TlsAuth { path: p, direction, digest }) => {
                write!(f, "tls-auth {}", path(p))?;
                if let Some(d) = direction {
                    write!(f, " direction {d}")?;
                }
                writeln!(f, " digest {}", digest.name())?;
            }
            Some(Wrap::TlsCrypt { path: p }) => writeln!(f, "tls-crypt {}", path(p))?,
            Some(Wrap::TlsCryptV2 { path: p }) => writeln!(f, "tls-crypt-v2 {}", path(p))?,
            None => {}
        }
        writeln!(f)?;
        let ciphers: Vec<&str> = self.data_ciphers.iter().map(|c| c.name()).collect();
        writeln!(f, "data-ciphers {{ {} }}", ciphers.join(", "))?;
        if let Some(c) = self.fallback_cipher {
            writeln!(f, "fallback-cipher {}", c.name())?;
        }
        writeln!(f, "auth {}", self.auth.name())?;
        writeln!(f, "keepalive {} {}", self.keepalive.0, self.keepalive.1)?;
        writeln!(f, "reneg-sec {}", self.reneg_sec)?;
        writeln!(f, "rx-moderation {}", self.rx_moderation)?;
        writeln!(f, "data-threads {}", self.data_threads)?;
        writeln!(f, "ack-filter {}", if self.ack_filter { "yes" } else { "no" })?;
        writeln!(f, "watchdog {}", self.watchdog)?;
        for r in &self.push_routes {
            writeln!(f, "push route {r}")?;
        }
        for d in &self.push_dns {
            writeln!(f, "push dns {d}")?;
        }
        if let Some(d) = &self.push_domain {
            writeln!(f, "push domain {}", Quoted(d))?;
        }
        match &self.password {
            Some(PasswordCheck::Script { path: p, timeout }) => {
                writeln!(f, "password script {} timeout {timeout}", path(p))?
            }
            Some(PasswordCheck::Pam { service, timeout }) => {
                writeln!(f, "password pam service {} timeout {timeout}", Quoted(service))?
            }
            Some(PasswordCheck::BsdAuth { style, kind, timeout }) => {
                write!(f, "password bsdauth")?;
                if let Some(s) = style {
                    write!(f, " style {}", Quoted(s))?;
                }
                writeln!(f, " type {} timeout {timeout}", Quoted(kind))?
            }
            None => {}
        }
        if let Some(l) = self.password_token {
            writeln!(f, "password token lifetime {l}")?;
        }
        writeln!(f, "verify-client-cert {}", self.verify_client_cert.name())?;
        for o in &self.push_options {
            writeln!(f, "push {}", Quoted(o))?;
        }
        if let Some(s) = &self.status {
            writeln!(f, "status {} interval {} version {}", path(&s.path), s.interval, s.version)?;
        }
        if let Some(m) = &self.management {
            write!(f, "management {} unix", path(&m.path))?;
            if let Some(g) = &m.group {
                write!(f, " group {}", Quoted(g))?;
            }
            writeln!(f)?;
        }
        if let Some(d) = &self.client_config_dir {
            writeln!(f, "client-config-dir {}", path(d))?;
        }
        writeln!(f, "duplicate-cn {}", self.duplicate_cn.name())?;
        let Some(s) = &self.sync else { return Ok(()) };
        writeln!(f, "\nsync {{")?;
        match &s.role {
            RoleSource::Vip { address, interface } => {
                writeln!(f, "\trole vip {address} interface {}", Quoted(interface))?
            }
            RoleSource::Carp { interface } => writeln!(f, "\trole carp interface {}", Quoted(interface))?,
        }
        match &s.transport {
            SyncTransport::Multicast { group, port, interface } => {
                writeln!(f, "\tmulticast group {group} port {port} interface {}", Quoted(interface))?
            }
            SyncTransport::Unicast { peers } => {
                for p in peers {
                    writeln!(f, "\tpeer {} port {}", p.ip(), p.port())?;
                }
            }
        }
        writeln!(f, "\tkey {}", path(&s.key))?;
        write!(f, "\tdemote group {}", Quoted(&s.demote.group))?;
        if let Some(file) = &s.demote.file {
            write!(f, " file {}", path(file))?;
        }
        writeln!(f, " value {}", s.demote.value)?;
        writeln!(f, "\tmember {}", s.member)?;
        writeln!(f, "\trekey-window {}", s.rekey_window)?;
        writeln!(f, "}}")
    }
}
