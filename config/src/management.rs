//! The `management` statement: OpenVPN's management interface, on a unix
//! socket only. OpenVPN's own spelling (`management /path unix`) is
//! accepted as it is, so a server.conf line moves unchanged; its TCP form
//! (`management 127.0.0.1 7505`) is refused: a TCP port is open to every
//! local user, and OpenVPN's password file is the only guard there.

use super::{PResult, Parser};
use crate::lexer::Tok;
use crate::Management;

impl Parser {
    /// `management PATH [unix] [group NAME]`.
    pub(super) fn management(&mut self, pos: crate::Pos) -> PResult<()> {
        self.once("management", pos)?;
        let (what, at) = self.text("a management socket path")?;
        if what.parse::<std::net::IpAddr>().is_ok() || what == "localhost" || self.next_is_number()? {
            return Err(self.error(
                at,
                format!("management on TCP (\"{what}\") is not supported; use a unix socket: management \"/var/run/vpnsyncd.mgmt\" unix"),
            ));
        }
        let path = std::path::PathBuf::from(&what);
        if !path.is_absolute() {
            return Err(self.error(at, format!("management socket \"{what}\" must be an absolute path")));
        }
        self.optional("unix")?;
        let group = if self.optional("group")? { Some(self.text("a group name")?.0) } else { None };
        if let Tok::Word(w) | Tok::Str(w) = self.peek()?.clone() {
            let (_, p) = self.next()?;
            return Err(self.error(
                p,
                format!("management password files (\"{w}\") are not supported; the socket's mode and group decide who may connect"),
            ));
        }
        self.d.management = Some(Management { path, group });
        Ok(())
    }

    /// Whether the next token is a port number (OpenVPN's TCP form).
    fn next_is_number(&mut self) -> PResult<bool> {
        Ok(matches!(self.peek()?, Tok::Word(w) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())))
    }
}
