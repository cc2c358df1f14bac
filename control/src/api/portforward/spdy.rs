//! The part of SPDY/3.1 that `kubectl port-forward` speaks (as spdystream, the
//! library client-go uses, implements it): frames read from a byte stream and
//! written to it, with the session's one zlib context for header blocks.
//!
//! **Header blocks share one compression context per direction, so frames
//! carrying them are encoded and decoded strictly in wire order.**

use std::collections::BTreeMap;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::dictionary;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (the length field allows 16 MiB).
const MAX_FRAME: usize = 1 << 24;
/// RST_STREAM status: the stream was refused.
pub const REFUSED_STREAM: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// A frame as the session needs it; frames it ignores come as `Other`.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A new stream opened by the peer, with its (lower-cased) headers.
    SynStream {
        id: u32,
        fin: bool,
        headers: BTreeMap<String, String>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    RstStream {
        id: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY: read and ignored.
    Other,
}

/// Reads frames from bytes pushed in as they arrive.
pub struct Decoder {
    buf: Vec<u8>,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            inflate: Decompress::new(true),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = (be32(&self.buf[4..8]) & 0x00ff_ffff) as usize;
        if len >= MAX_FRAME {
            return Err(SpdyError::Malformed("frame too large"));
        }
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let head: Vec<u8> = self.buf.drain(..8).collect();
        let body: Vec<u8> = self.buf.drain(..len).collect();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                id: be32(&head[0..4]) & 0x7fff_ffff,
                fin,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if body.len() < n {
                Err(SpdyError::Malformed("control frame too short"))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10)?;
                let headers = self.headers(&body[10..])?;
                Frame::SynStream {
                    id: be32(&body[0..4]) & 0x7fff_ffff,
                    fin,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                // Their header blocks still advance the shared zlib context.
                need(4)?;
                self.headers(&body[4..])?;
                Frame::Other
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: be32(&body[0..4]) & 0x7fff_ffff,
                }
            }
            PING => {
                need(4)?;
                Frame::Ping(be32(&body[0..4]))
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    /// Inflate one header block (continuing the session's zlib stream) and
    /// parse its name/value pairs; values holding NULs keep the first value.
    fn headers(&mut self, block: &[u8]) -> Result<BTreeMap<String, String>, SpdyError> {
        let raw = self.inflate_block(block)?;
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], SpdyError> {
            let s = raw
                .get(at..at + n)
                .ok_or(SpdyError::Malformed("header block too short"))?;
            at += n;
            Ok(s)
        };
        let count = be32(take(4)?);
        let mut out = BTreeMap::new();
        for _ in 0..count {
            let n = be32(take(4)?) as usize;
            let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
            let n = be32(take(4)?) as usize;
            let value = String::from_utf8_lossy(take(n)?);
            let first = value.split('\0').next().unwrap_or("").to_string();
            out.insert(name, first);
        }
        Ok(out)
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (in0, out0) = (self.inflate.total_in(), out.len());
            match self
                .inflate
                .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary::bytes())
                        .map_err(|e| SpdyError::Headers(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
            pos += (self.inflate.total_in() - in0) as usize;
            let full = out.capacity() == out.len();
            if pos >= block.len() && !full {
                return Ok(out);
            }
            if self.inflate.total_in() == in0 && out.len() == out0 && !full {
                return Err(SpdyError::Headers("inflate made no progress".into()));
            }
        }
    }
}

/// Writes frames; owns the compression context for the header blocks sent.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
        }
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.extend_from_slice(&(((flags as u32) << 24) | body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A DATA frame (payloads above the 24-bit length are the caller's to split).
pub fn data(id: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { FLAG_FIN as u32 } else { 0 };
    f.extend_from_slice(&((flags << 24) | payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &b)
}

impl Encoder {
    /// SYN_REPLY with no headers, accepting a stream the peer opened.
    pub fn syn_reply(&mut self, id: u32) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend(self.deflate_block(&0u32.to_be_bytes()));
        control(SYN_REPLY, 0, &body)
    }

    /// A SYN_STREAM as a client sends it (used by the tests, which play the client).
    pub fn syn_stream(&mut self, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(self.deflate_block(&raw));
        control(SYN_STREAM, 0, &body)
    }

    fn deflate_block(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let before = self.deflate.total_in();
            // Compressing into a Vec with room cannot fail.
            let _ = self
                .deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's encoder: zlib with the SPDY dictionary, as spdystream writes.
    fn client_encoder() -> Encoder {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(dictionary::bytes()).unwrap();
        Encoder { deflate }
    }

    #[test]
    fn reads_what_a_client_writes_across_frames() {
        let mut client = client_encoder();
        let mut wire = client.syn_stream(
            1,
            &[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0"),
            ],
        );
        wire.extend(client.syn_stream(
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ));
        wire.extend(data(3, false, b"GET / HTTP/1.0\r\n\r\n"));
        wire.extend(data(1, true, b""));
        wire.extend(ping(1));
        let mut d = Decoder::default();
        // Bytes arrive in odd pieces.
        for chunk in wire.chunks(5) {
            d.push(chunk);
        }
        let Some(Frame::SynStream { id: 1, headers, .. }) = d.next_frame().unwrap() else {
            panic!("first frame")
        };
        assert_eq!(headers["streamtype"], "error");
        let Some(Frame::SynStream { id: 3, headers, .. }) = d.next_frame().unwrap() else {
            panic!("second frame")
        };
        assert_eq!(headers["streamtype"], "data");
        assert_eq!(headers["port"], "8080");
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Data {
                id: 3,
                fin: false,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec()
            })
        );
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Data {
                id: 1,
                fin: true,
                data: vec![]
            })
        );
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Ping(1)));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn replies_decode_with_a_fresh_context_and_junk_is_an_error() {
        let mut server = Encoder::default();
        let mut d = Decoder::default();
        d.push(&server.syn_reply(1));
        d.push(&server.syn_reply(3));
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Other));
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Other));
        let mut bad = Decoder::default();
        bad.push(&[0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(bad.next_frame(), Err(SpdyError::Version(2))));
        let mut short = Decoder::default();
        short.push(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0]);
        assert!(short.next_frame().is_err());
    }
}
