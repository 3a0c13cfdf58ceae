//! Reading a fuzz input front to back as a sequence of events (the
//! stateful targets decode their operations with this).

/// The unread rest of the input; every read is `None` at its end.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// A length-prefixed byte string of at most `max` bytes, cut short at
    /// the end of the input.
    pub fn bytes(&mut self, max: u16) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()? % max).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }
}
