//! The packet codec: the first byte of every packet, the logical control
//! packet (protocol reference §1, §2, §5) and the data packet header.
//!
//! This layer only sees plaintext: the wrapping (HMAC, replay id, tls-crypt)
//! is removed by [`crate::wrap`] first, which hands over the first byte, the
//! sender's session id and the remaining bytes, the [`ControlBody`].
//! Every parser here returns an error instead of panicking, whatever the input.

use std::fmt;

/// Most message ids one control packet may acknowledge (`RELIABLE_ACK_SIZE`);
/// a peer that sends more is broken or hostile.
pub const MAX_ACKS: usize = 8;

/// The DataV2 peer id that means "no peer id assigned".
pub const NO_PEER_ID: u32 = 0xFF_FFFF;

/// Length of the DataV2 header: first byte and 24-bit peer id.
pub const DATA_V2_HEADER_LEN: usize = 4;

/// Session ids are 8 opaque bytes, chosen at random by each side.
pub type SessionId = [u8; 8];

/// The 5-bit opcode in the first byte of every packet (§1.2). The removed
/// key-method-1 resets (1, 2) are deliberately absent: they are rejected as
/// unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    SoftResetV1 = 3,
    ControlV1 = 4,
    AckV1 = 5,
    DataV1 = 6,
    HardResetClientV2 = 7,
    HardResetServerV2 = 8,
    DataV2 = 9,
    HardResetClientV3 = 10,
    ControlWkcV1 = 11,
}

impl Opcode {
    /// The opcode for the 5-bit value `op`, if it is one we speak.
    pub fn from_u8(op: u8) -> Option<Opcode> {
        Some(match op {
            3 => Opcode::SoftResetV1,
            4 => Opcode::ControlV1,
            5 => Opcode::AckV1,
            6 => Opcode::DataV1,
            7 => Opcode::HardResetClientV2,
            8 => Opcode::HardResetServerV2,
            9 => Opcode::DataV2,
            10 => Opcode::HardResetClientV3,
            11 => Opcode::ControlWkcV1,
            _ => return None,
        })
    }

    /// Control packets carry a session id and go through the wrapping;
    /// data packets do not.
    pub fn is_control(self) -> bool {
        !matches!(self, Opcode::DataV1 | Opcode::DataV2)
    }

    /// Reliable packets carry a message packet id and must be ACKed;
    /// a P_ACK_V1 is the only control packet that is not.
    pub fn is_reliable(self) -> bool {
        self.is_control() && self != Opcode::AckV1
    }

    /// The first byte of a packet with this opcode and `key_id` (low 3 bits).
    pub fn first_byte(self, key_id: u8) -> u8 {
        ((self as u8) << 3) | (key_id & 0x07)
    }

    /// OpenVPN's name, for log and error messages that an operator can
    /// match against OpenVPN's own logs.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::SoftResetV1 => "P_CONTROL_SOFT_RESET_V1",
            Opcode::ControlV1 => "P_CONTROL_V1",
            Opcode::AckV1 => "P_ACK_V1",
            Opcode::DataV1 => "P_DATA_V1",
            Opcode::HardResetClientV2 => "P_CONTROL_HARD_RESET_CLIENT_V2",
            Opcode::HardResetServerV2 => "P_CONTROL_HARD_RESET_SERVER_V2",
            Opcode::DataV2 => "P_DATA_V2",
            Opcode::HardResetClientV3 => "P_CONTROL_HARD_RESET_CLIENT_V3",
            Opcode::ControlWkcV1 => "P_CONTROL_WKC_V1",
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Splits a first byte into `(opcode, key_id)`; the opcode is not validated
/// so that the caller can report the raw value.
pub fn split_first_byte(b: u8) -> (u8, u8) {
    (b >> 3, b & 0x07)
}

/// Why a packet could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The 5-bit opcode is not one of [`Opcode`].
    UnknownOpcode(u8),
    /// A data opcode where a control packet was expected.
    NotControl(Opcode),
    /// The body ends before the ack count.
    MissingAckCount,
    /// More ACKs than [`MAX_ACKS`].
    TooManyAcks(u8),
    /// The body ends inside the ACK list.
    TruncatedAcks,
    /// The body ends inside the echoed remote session id.
    TruncatedRemoteSessionId,
    /// The body of a reliable packet ends inside the message packet id.
    TruncatedMessageId,
    /// A P_ACK_V1 with bytes after its ACK section.
    AckWithPayload(usize),
    /// The packet is shorter than its first byte and session id.
    TruncatedHeader,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            WireError::NotControl(op) => write!(f, "{op} is not a control opcode"),
            WireError::MissingAckCount => f.write_str("control packet ends before the ack count"),
            WireError::TooManyAcks(n) => write!(f, "ack count {n} exceeds {MAX_ACKS}"),
            WireError::TruncatedAcks => f.write_str("truncated ACK list"),
            WireError::TruncatedRemoteSessionId => f.write_str("truncated remote session id"),
            WireError::TruncatedMessageId => f.write_str("truncated message packet id"),
            WireError::AckWithPayload(n) => write!(f, "P_ACK_V1 carries {n} payload bytes"),
            WireError::TruncatedHeader => f.write_str("packet shorter than its opcode and session id"),
        }
    }
}

impl std::error::Error for WireError {}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn session_id(&mut self) -> Option<SessionId> {
        self.take(8).map(|b| {
            let mut sid = [0; 8];
            sid.copy_from_slice(b);
            sid
        })
    }
}

/// What follows the sender's session id in a control packet once the
/// wrapping is removed (§2.1): the ACK section, the message id and the
/// payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlBody {
    /// Message packet ids acknowledged, at most [`MAX_ACKS`].
    pub acks: Vec<u32>,
    /// The receiver's session id, echoed; present exactly when `acks` is not
    /// empty.
    pub remote_session_id: Option<SessionId>,
    /// Message packet id; absent in P_ACK_V1 only.
    pub msg_pid: Option<u32>,
    /// TLS records (P_CONTROL_V1), TLVs (resets) or nothing.
    pub payload: Vec<u8>,
}

impl ControlBody {
    /// Decodes the body of a control packet with `opcode`.
    pub fn parse(opcode: Opcode, bytes: &[u8]) -> Result<ControlBody, WireError> {
        if !opcode.is_control() {
            return Err(WireError::NotControl(opcode));
        }
        let mut r = Reader { rest: bytes };
        let (acks, remote_session_id) = Self::parse_acks(&mut r)?;
        let msg_pid = if opcode.is_reliable() { Some(r.u32().ok_or(WireError::TruncatedMessageId)?) } else { None };
        if !opcode.is_reliable() && !r.rest.is_empty() {
            return Err(WireError::AckWithPayload(r.rest.len()));
        }
        Ok(ControlBody { acks, remote_session_id, msg_pid, payload: r.rest.to_vec() })
    }

    fn parse_acks(r: &mut Reader<'_>) -> Result<(Vec<u32>, Option<SessionId>), WireError> {
        let count = r.u8().ok_or(WireError::MissingAckCount)?;
        if usize::from(count) > MAX_ACKS {
            return Err(WireError::TooManyAcks(count));
        }
        let acks =
            (0..count).map(|_| r.u32().ok_or(WireError::TruncatedAcks)).collect::<Result<Vec<u32>, WireError>>()?;
        if acks.is_empty() {
            return Ok((acks, None));
        }
        let sid = r.session_id().ok_or(WireError::TruncatedRemoteSessionId)?;
        Ok((acks, Some(sid)))
    }

    /// Appends the wire form to `out`. The caller keeps `acks` within
    /// [`MAX_ACKS`]; a missing `remote_session_id` with ACKs is written as
    /// zeros (which the peer rejects), and is a bug of the caller.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.acks.len() <= MAX_ACKS, "too many ACKs to encode");
        debug_assert!(self.acks.is_empty() || self.remote_session_id.is_some(), "ACKs need the remote session id");
        out.push(self.acks.len().min(MAX_ACKS) as u8);
        for ack in self.acks.iter().take(MAX_ACKS) {
            out.extend_from_slice(&ack.to_be_bytes());
        }
        if !self.acks.is_empty() {
            out.extend_from_slice(&self.remote_session_id.unwrap_or_default());
        }
        if let Some(pid) = self.msg_pid {
            out.extend_from_slice(&pid.to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
    }

    /// The wire form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 4 * self.acks.len() + 8 + 4 + self.payload.len());
        self.encode(&mut out);
        out
    }
}

/// A logical control packet: what the wrapping protects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub opcode: Opcode,
    pub key_id: u8,
    /// The sender's session id.
    pub session_id: SessionId,
    pub body: ControlBody,
}

impl ControlPacket {
    /// Decodes the triple that [`crate::wrap::Wrapper::unwrap`] returns.
    pub fn decode(first_byte: u8, session_id: SessionId, body: &[u8]) -> Result<ControlPacket, WireError> {
        let (op, key_id) = split_first_byte(first_byte);
        let opcode = Opcode::from_u8(op).ok_or(WireError::UnknownOpcode(op))?;
        let body = ControlBody::parse(opcode, body)?;
        Ok(ControlPacket { opcode, key_id, session_id, body })
    }

    /// Decodes an unwrapped packet in one piece (no tls-auth / tls-crypt).
    pub fn parse(packet: &[u8]) -> Result<ControlPacket, WireError> {
        let mut r = Reader { rest: packet };
        let first = r.u8().ok_or(WireError::TruncatedHeader)?;
        let sid = r.session_id().ok_or(WireError::TruncatedHeader)?;
        Self::decode(first, sid, r.rest)
    }

    /// The first byte on the wire.
    pub fn first_byte(&self) -> u8 {
        self.opcode.first_byte(self.key_id)
    }
}

/// The 24-bit peer id of a P_DATA_V2 packet; `None` for anything else or a
/// packet too short to hold it.
pub fn data_peer_id(packet: &[u8]) -> Option<u32> {
    let header = packet.get(..DATA_V2_HEADER_LEN)?;
    let (op, _) = split_first_byte(header[0]);
    if op != Opcode::DataV2 as u8 {
        return None;
    }
    Some(u32::from_be_bytes([0, header[1], header[2], header[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const CLIENT_SID: SessionId = [0x76, 0x8d, 0x52, 0x87, 0xc2, 0xfb, 0xc3, 0x67];
    const SERVER_SID: SessionId = [0x8d, 0x7d, 0x59, 0x1c, 0xf5, 0xe1, 0xc4, 0x6b];

    /// Header + HMAC-SHA1 + long replay id of the §21.1 tls-auth captures.
    const TLS_AUTH_SHA1_HEADER: usize = 1 + 8 + 20 + 8;

    #[test]
    fn first_bytes() {
        assert_eq!(Opcode::HardResetClientV2.first_byte(0), 0x38);
        assert_eq!(Opcode::HardResetServerV2.first_byte(0), 0x40);
        assert_eq!(Opcode::ControlV1.first_byte(0), 0x20);
        assert_eq!(Opcode::AckV1.first_byte(0), 0x28);
        assert_eq!(Opcode::DataV1.first_byte(0), 0x30);
        assert_eq!(Opcode::DataV2.first_byte(0), 0x48);
        assert_eq!(Opcode::HardResetClientV3.first_byte(0), 0x50);
        assert_eq!(Opcode::ControlWkcV1.first_byte(0), 0x58);
        assert_eq!(Opcode::SoftResetV1.first_byte(1), 0x19);
        assert_eq!(Opcode::ControlV1.first_byte(1), 0x21);
        assert_eq!(Opcode::DataV2.first_byte(9), 0x49, "key id masked to 3 bits");
        assert_eq!(split_first_byte(0x29), (5, 1));
    }

    #[test]
    fn opcode_values_and_classes() {
        for op in 0..=31u8 {
            match Opcode::from_u8(op) {
                Some(o) => {
                    assert_eq!(o as u8, op);
                    assert!((3..=11).contains(&op));
                    assert_eq!(split_first_byte(o.first_byte(7)), (op, 7));
                }
                None => assert!(!(3..=11).contains(&op)),
            }
        }
        assert!(!Opcode::DataV1.is_control() && !Opcode::DataV2.is_control());
        assert!(Opcode::AckV1.is_control() && !Opcode::AckV1.is_reliable());
        assert!(Opcode::ControlWkcV1.is_reliable());
        assert!(!Opcode::DataV2.is_reliable());
    }

    /// §21.1 server HARD_RESET_SERVER_V2, 54 bytes with tls-auth SHA1.
    #[test]
    fn lab_server_reset() {
        let pkt = hex("40 8d7d591cf5e1c46b 83913fa6ae5562ae0123995704f66d41ea08832f 00000001 6b05e786
             01 00000000 768d5287c2fbc367 00000000");
        assert_eq!(pkt.len(), 54);
        let (op, key_id) = split_first_byte(pkt[0]);
        assert_eq!(Opcode::from_u8(op), Some(Opcode::HardResetServerV2));
        assert_eq!(key_id, 0);
        assert_eq!(pkt[1..9], SERVER_SID);
        let body = ControlBody::parse(Opcode::HardResetServerV2, &pkt[TLS_AUTH_SHA1_HEADER..]).unwrap();
        assert_eq!(body.acks, vec![0]);
        assert_eq!(body.remote_session_id, Some(CLIENT_SID));
        assert_eq!(body.msg_pid, Some(0));
        assert!(body.payload.is_empty());
        assert_eq!(body.to_bytes(), pkt[TLS_AUTH_SHA1_HEADER..]);
    }

    /// §21.1 client P_ACK_V1 acknowledging 1 and 0 with tls-auth SHA1. It is
    /// 54 bytes: the 50 of §2.2 are for an ACK of one id, this one holds two.
    #[test]
    fn lab_client_ack() {
        let pkt = hex("28 768d5287c2fbc367 dc737a02a52cf30602f404f5429dab7879ccc5f8 00000003 6b05e786
             02 00000001 00000000 8d7d591cf5e1c46b");
        assert_eq!(pkt.len(), 54);
        assert_eq!(split_first_byte(pkt[0]), (Opcode::AckV1 as u8, 0));
        assert_eq!(pkt[1..9], CLIENT_SID);
        let body = ControlBody::parse(Opcode::AckV1, &pkt[TLS_AUTH_SHA1_HEADER..]).unwrap();
        assert_eq!(body.acks, vec![1, 0]);
        assert_eq!(body.remote_session_id, Some(SERVER_SID));
        assert_eq!(body.msg_pid, None);
        assert!(body.payload.is_empty());
        assert_eq!(body.to_bytes(), pkt[TLS_AUTH_SHA1_HEADER..]);
    }

    #[test]
    fn unwrapped_packet_round_trip() {
        let packet = ControlPacket {
            opcode: Opcode::ControlV1,
            key_id: 2,
            session_id: CLIENT_SID,
            body: ControlBody {
                acks: vec![7, 1, u32::MAX, 0, 2, 3, 4, 5],
                remote_session_id: Some(SERVER_SID),
                msg_pid: Some(42),
                payload: b"\x16\x03\x01 client hello".to_vec(),
            },
        };
        let mut wire = vec![packet.first_byte()];
        wire.extend_from_slice(&packet.session_id);
        packet.body.encode(&mut wire);
        assert_eq!(ControlPacket::parse(&wire), Ok(packet));
    }

    #[test]
    fn body_round_trips() {
        let cases = [
            (Opcode::HardResetClientV2, ControlBody { msg_pid: Some(0), ..ControlBody::default() }),
            (
                Opcode::AckV1,
                ControlBody { acks: vec![9], remote_session_id: Some(SERVER_SID), ..ControlBody::default() },
            ),
            (
                Opcode::HardResetServerV2,
                ControlBody { msg_pid: Some(0), payload: vec![0, 1, 0, 2, 0, 1], ..ControlBody::default() },
            ),
        ];
        for (op, body) in cases {
            assert_eq!(ControlBody::parse(op, &body.to_bytes()), Ok(body));
        }
    }

    #[test]
    fn errors() {
        let cases: [(Opcode, &str, WireError); 7] = [
            (Opcode::ControlV1, "", WireError::MissingAckCount),
            (Opcode::ControlV1, "09", WireError::TooManyAcks(9)),
            (Opcode::ControlV1, "ff", WireError::TooManyAcks(255)),
            (Opcode::ControlV1, "02 00000001 000000", WireError::TruncatedAcks),
            (Opcode::AckV1, "01 00000001 11111111111111", WireError::TruncatedRemoteSessionId),
            (Opcode::ControlV1, "00 000000", WireError::TruncatedMessageId),
            (Opcode::DataV2, "00", WireError::NotControl(Opcode::DataV2)),
        ];
        for (op, body, want) in cases {
            assert_eq!(ControlBody::parse(op, &hex(body)), Err(want), "{op} {body}");
        }
        // An ACK packet without ACKs is odd but well-formed.
        assert_eq!(ControlBody::parse(Opcode::AckV1, &[0]), Ok(ControlBody::default()));
        assert_eq!(
            ControlBody::parse(Opcode::AckV1, &hex("01 00000001 1111111111111111 00")),
            Err(WireError::AckWithPayload(1))
        );
        assert_eq!(ControlPacket::parse(&hex("88 1111111111111111 00 00000000")), Err(WireError::UnknownOpcode(17)));
        assert_eq!(ControlPacket::parse(&hex("38 11111111111111")), Err(WireError::TruncatedHeader));
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(WireError::UnknownOpcode(17).to_string(), "unknown opcode 17");
        assert_eq!(WireError::TooManyAcks(9).to_string(), "ack count 9 exceeds 8");
        assert_eq!(WireError::TruncatedAcks.to_string(), "truncated ACK list");
        assert_eq!(WireError::NotControl(Opcode::DataV1).to_string(), "P_DATA_V1 is not a control opcode");
    }

    #[test]
    fn peer_id() {
        assert_eq!(data_peer_id(&hex("48000000 00000001")), Some(0));
        assert_eq!(data_peer_id(&hex("49ffffff")), Some(NO_PEER_ID));
        assert_eq!(data_peer_id(&hex("48123456")), Some(0x12_3456));
        assert_eq!(data_peer_id(&hex("480000")), None);
        assert_eq!(data_peer_id(&hex("30000000")), None);
        assert_eq!(data_peer_id(&[]), None);
    }

    /// Every prefix of every byte string tried must decode or fail cleanly.
    #[test]
    fn no_panic_on_truncation() {
        let pkt = hex("20 1111111111111111 08 00000001 00000002 00000003 00000004 00000005 00000006 00000007 00000008 2222222222222222 00000009 abcdef");
        ControlPacket::parse(&pkt).unwrap();
        for n in 0..pkt.len() {
            let _ = ControlPacket::parse(&pkt[..n]);
        }
        for b in 0..=255u8 {
            let _ = ControlPacket::parse(&[b; 20]);
        }
    }
}
