//! The client side of SPDY/3.1 framing, as far as the node needs it to drive the runtime's
//! streaming server (the same `httpstream` SPDY that kubectl and the kubelet speak): open streams
//! with `SYN_STREAM`, send and receive `DATA`, half-close with `FLAG_FIN`, answer `PING`.
//!
//! Frame layout (SPDY/3): a control frame starts with the control bit, version 3 and a 16-bit
//! type; a data frame starts with a 31-bit stream id. Both continue with 8 bits of flags and a
//! 24-bit payload length.
//!
//! Header blocks are a zlib stream shared by every frame of one direction of a connection, with
//! the SPDY/3 dictionary for compressors that want it. The node only ever sends a handful of
//! tiny header blocks, so it encodes them as deflate *stored* blocks (valid zlib that any
//! inflater reads, dictionary or not) and never inflates the runtime's replies: their headers
//! (`SYN_REPLY`) carry nothing a client needs.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The largest payload a frame's 24-bit length field can carry.
const MAX_PAYLOAD: usize = 0x00ff_ffff;
/// The largest deflate stored block.
const MAX_STORED_BLOCK: usize = 0xffff;

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;

/// `FLAG_FIN`: the sender will send nothing more on this stream.
pub const FLAG_FIN: u8 = 0x01;

/// A SPDY stream id (31 bits; the client's are odd).
pub type StreamId = u32;

/// A frame the node acts on; the rest (`SETTINGS`, `WINDOW_UPDATE`, `HEADERS`) are skipped.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Data for a stream; `fin` half-closes it.
    Data {
        /// The stream.
        stream: StreamId,
        /// Whether `FLAG_FIN` was set.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// The peer accepted a stream.
    SynReply {
        /// The stream.
        stream: StreamId,
        /// Whether `FLAG_FIN` was set.
        fin: bool,
    },
    /// The peer reset a stream.
    RstStream {
        /// The stream.
        stream: StreamId,
        /// The status code.
        status: u32,
    },
    /// A liveness probe to echo.
    Ping(u32),
    /// The peer is closing the connection.
    GoAway,
    /// A frame the node ignores.
    Other,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The connection failed or ended inside a frame.
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not SPDY/3.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

/// Reads the next frame, or `None` at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    let mut payload = Bytes::from(payload);
    let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data { stream: first, fin: flags & FLAG_FIN != 0, data: payload }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(SpdyError::Protocol(format!("version {version} instead of 3")));
    }
    let needs = |n: usize| {
        if length < n {
            Err(SpdyError::Protocol(format!("a control frame of type {} is {length} bytes long", first & 0xffff)))
        } else {
            Ok(())
        }
    };
    let frame = match (first & 0xffff) as u16 {
        TYPE_SYN_REPLY => {
            needs(4)?;
            Frame::SynReply { stream: payload.get_u32() & 0x7fff_ffff, fin: flags & FLAG_FIN != 0 }
        }
        TYPE_RST_STREAM => {
            needs(8)?;
            Frame::RstStream { stream: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
        }
        TYPE_PING => {
            needs(4)?;
            Frame::Ping(payload.get_u32())
        }
        TYPE_GOAWAY => Frame::GoAway,
        _ => Frame::Other,
    };
    Ok(Some(frame))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u16(0x8000 | VERSION);
    frame.put_u16(kind);
    frame.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    frame.put_slice(payload);
    frame.freeze()
}

/// `DATA` frames carrying `data` on `stream` (split at the 24-bit length limit), the last with
/// `FLAG_FIN` when `fin`. Empty `data` with `fin` is a bare half-close.
#[must_use]
pub fn data(stream: StreamId, data: &[u8], fin: bool) -> Vec<Bytes> {
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_PAYLOAD).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut frame = BytesMut::with_capacity(8 + chunk.len());
            frame.put_u32(stream & 0x7fff_ffff);
            let flags = if fin && i == last { FLAG_FIN } else { 0 };
            frame.put_u32((u32::from(flags) << 24) | chunk.len() as u32);
            frame.put_slice(chunk);
            frame.freeze()
        })
        .collect()
}

/// The `PING` answering `id`.
#[must_use]
pub fn ping(id: u32) -> Bytes {
    control(TYPE_PING, 0, &id.to_be_bytes())
}

/// `GOAWAY`: the node opens no more streams (status 0, OK).
#[must_use]
pub fn go_away(last_good: StreamId) -> Bytes {
    let mut payload = Vec::with_capacity(8);
    payload.extend_from_slice(&last_good.to_be_bytes());
    payload.extend_from_slice(&0u32.to_be_bytes());
    control(TYPE_GOAWAY, 0, &payload)
}

/// Opens client streams on one connection: hands out odd stream ids and keeps the state of the
/// connection's outgoing header zlib stream.
#[derive(Debug)]
pub struct StreamOpener {
    next: StreamId,
    zlib_started: bool,
}

impl Default for StreamOpener {
    fn default() -> Self {
        StreamOpener { next: 1, zlib_started: false }
    }
}

impl StreamOpener {
    /// The `SYN_STREAM` opening the next stream with `headers` (names lower-case), and its id.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> (StreamId, Bytes) {
        let stream = self.next;
        self.next += 2;
        let block = self.header_block(headers);
        let mut payload = Vec::with_capacity(10 + block.len());
        payload.extend_from_slice(&stream.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&block);
        (stream, control(TYPE_SYN_STREAM, 0, &payload))
    }

    /// The highest stream id handed out so far (0 before the first).
    #[must_use]
    pub fn last(&self) -> StreamId {
        self.next.saturating_sub(2)
    }

    /// A name/value header block, deflated as stored blocks continuing the connection's zlib
    /// stream (whose two-byte header goes out with the first block).
    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for text in [name, value] {
                plain.extend_from_slice(&(text.len() as u32).to_be_bytes());
                plain.extend_from_slice(text.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 16);
        if !self.zlib_started {
            // CMF 0x78: deflate with a 32 KiB window; FLG 0x01 makes the pair a multiple of 31.
            out.extend_from_slice(&[0x78, 0x01]);
            self.zlib_started = true;
        }
        for chunk in plain.chunks(MAX_STORED_BLOCK) {
            // A non-final stored block: BFINAL 0, BTYPE 00, padded to the byte; then LEN, NLEN.
            let len = chunk.len() as u16;
            out.push(0);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // The sync-flush marker (an empty stored block) every SPDY header block ends with:
        // inflaters hand out what they hold only once they read it.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_stored(mut zlib: &[u8]) -> Vec<u8> {
        assert_eq!(&zlib[..2], &[0x78, 0x01]);
        zlib = &zlib[2..];
        assert!(zlib.ends_with(&[0, 0, 0, 0xff, 0xff]), "no sync flush");
        let mut out = Vec::new();
        while !zlib.is_empty() {
            assert_eq!(zlib[0], 0);
            let len = u16::from_le_bytes([zlib[1], zlib[2]]);
            assert_eq!(!len, u16::from_le_bytes([zlib[3], zlib[4]]));
            out.extend_from_slice(&zlib[5..5 + usize::from(len)]);
            zlib = &zlib[5 + usize::from(len)..];
        }
        out
    }

    #[test]
    fn syn_stream_carries_odd_ids_and_a_stored_header_block() {
        let mut opener = StreamOpener::default();
        let (first, frame) = opener.open(&[("streamtype", "error")]);
        assert_eq!(first, 1);
        assert_eq!(&frame[..4], &[0x80, 0x03, 0x00, 0x01]);
        let length = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
        assert_eq!(length, frame.len() - 8);
        assert_eq!(&frame[8..12], &1u32.to_be_bytes());
        let block = inflate_stored(&frame[18..]);
        let mut expected = 1u32.to_be_bytes().to_vec();
        expected.extend_from_slice(&10u32.to_be_bytes());
        expected.extend_from_slice(b"streamtype");
        expected.extend_from_slice(&5u32.to_be_bytes());
        expected.extend_from_slice(b"error");
        assert_eq!(block, expected);
        let (second, frame) = opener.open(&[("streamtype", "stdin")]);
        assert_eq!(second, 3);
        assert_eq!(frame[18], 0, "the zlib header goes out once per connection");
        assert_eq!(opener.last(), 3);
    }

    #[tokio::test]
    async fn frames_read_back() {
        let mut wire = Vec::new();
        for frame in data(5, b"hello", true) {
            wire.extend_from_slice(&frame);
        }
        wire.extend_from_slice(&ping(2));
        wire.extend_from_slice(&control(TYPE_SYN_REPLY, 0, &[0, 0, 0, 7, 0x78, 0x9c]));
        wire.extend_from_slice(&control(TYPE_RST_STREAM, 0, &[0, 0, 0, 7, 0, 0, 0, 5]));
        wire.extend_from_slice(&go_away(3));
        let mut reader = wire.as_slice();
        let expected = [
            Frame::Data { stream: 5, fin: true, data: Bytes::from_static(b"hello") },
            Frame::Ping(2),
            Frame::SynReply { stream: 7, fin: false },
            Frame::RstStream { stream: 7, status: 5 },
            Frame::GoAway,
        ];
        for frame in expected {
            assert_eq!(read_frame(&mut reader).await.ok().flatten(), Some(frame));
        }
        assert!(matches!(read_frame(&mut reader).await, Ok(None)));
    }

    #[test]
    fn an_empty_fin_is_one_bare_frame() {
        let frames = data(3, &[], true);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_ref(), &[0, 0, 0, 3, FLAG_FIN, 0, 0, 0]);
    }
}
