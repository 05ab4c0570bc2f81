//! The wire between two parties (or a party and the dealer): framed messages of ring
//! words, over TCP on loopback or over in-memory channels (tests).
//!
//! Frame (version 1, little-endian): magic `DPMC`, u16 version, u16 tag, u64 word count,
//! then the words. A receiver names what it expected (the tag is the operation's index)
//! and refuses a frame with another magic, version, tag or length: nothing is computed
//! from a malformed or misplaced message.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use crate::error::{Error, Result};

/// The frame magic.
pub const MAGIC: [u8; 4] = *b"DPMC";
/// The frame version.
pub const VERSION: u16 = 1;
const HEADER: usize = 16;
/// The longest frame accepted (2^28 words, 2 GiB): a length beyond it is refused before
/// any allocation.
pub const MAX_WORDS: u64 = 1 << 28;

/// Encodes one frame.
pub fn frame(tag: u16, words: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 8 * words.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(words.len() as u64).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// What a receiver expects: the tag and word count, and a name for messages.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The tag.
    pub tag: u16,
    /// Words; `None` accepts any count up to [`MAX_WORDS`].
    pub len: Option<usize>,
    /// What the message is, e.g. "party 1's opened input of operation 3 (conv2d)".
    pub what: &'a str,
}

fn malformed(what: &str, got: String, expected: String) -> Error {
    Error::Malformed {
        what: "mpc",
        message: format!("{what}: got {got}, expected {expected}"),
    }
}

/// Checks a frame header against `expect`; returns the word count.
pub fn check_header(header: &[u8; HEADER], expect: &Expect) -> Result<usize> {
    if header[0..4] != MAGIC {
        return Err(malformed(
            expect.what,
            format!("magic {:?}", &header[0..4]),
            "a dptrain mpc frame (magic DPMC)".into(),
        ));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(malformed(
            expect.what,
            format!("frame version {version}"),
            format!("version {VERSION}"),
        ));
    }
    let tag = u16::from_le_bytes([header[6], header[7]]);
    if tag != expect.tag {
        return Err(malformed(
            expect.what,
            format!("tag {tag}"),
            format!("tag {} (out of step with the other side)", expect.tag),
        ));
    }
    let words = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    let ok = match expect.len {
        Some(len) => words == len as u64,
        None => words <= MAX_WORDS,
    };
    if !ok {
        return Err(malformed(
            expect.what,
            format!("{words} words"),
            match expect.len {
                Some(len) => format!("{len}"),
                None => format!("at most {MAX_WORDS}"),
            },
        ));
    }
    Ok(words as usize)
}

/// Decodes one whole frame (header and body) held in memory.
pub fn unframe(bytes: &[u8], expect: &Expect) -> Result<Vec<u64>> {
    let Some(header) = bytes.get(..HEADER) else {
        return Err(malformed(
            expect.what,
            format!("{} bytes", bytes.len()),
            format!("a {HEADER}-byte header at least"),
        ));
    };
    let words = check_header(header.try_into().unwrap_or(&[0; HEADER]), expect)?;
    let body = &bytes[HEADER..];
    if body.len() != 8 * words {
        return Err(malformed(
            expect.what,
            format!("{} body bytes", body.len()),
            format!("{} ({words} words)", 8 * words),
        ));
    }
    Ok(words_of(body))
}

fn words_of(body: &[u8]) -> Vec<u64> {
    body.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// One side of a connection.
pub trait Link: Send {
    /// Sends one frame.
    fn send(&mut self, tag: u16, words: &[u64]) -> Result<()>;
    /// Receives one frame as `expect` describes.
    fn recv(&mut self, expect: &Expect) -> Result<Vec<u64>>;
    /// Sends `words` and receives the other side's frame of the same tag at the same time
    /// (both parties open their masked values in one round).
    fn exchange(&mut self, tag: u16, words: &[u64], expect: &Expect) -> Result<Vec<u64>>;
    /// Bytes sent so far.
    fn bytes_sent(&self) -> u64;
    /// Bytes received so far.
    fn bytes_received(&self) -> u64;
}

/// A link over in-memory channels (tests, and a party pair inside one process).
pub struct MemoryLink {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    sent: u64,
    received: u64,
    timeout: Duration,
}

impl MemoryLink {
    /// Two connected ends; a receive waits at most `timeout`.
    pub fn pair(timeout: Duration) -> (MemoryLink, MemoryLink) {
        let (a_tx, b_rx) = channel();
        let (b_tx, a_rx) = channel();
        let end = |tx, rx| MemoryLink {
            tx,
            rx,
            sent: 0,
            received: 0,
            timeout,
        };
        (end(a_tx, a_rx), end(b_tx, b_rx))
    }

    /// Sends raw bytes as one message (tests of the decoder).
    pub fn send_raw(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.tx
            .send(bytes)
            .map_err(|_| Error::Link("mpc: the other side of the link is gone".into()))
    }
}

impl Link for MemoryLink {
    fn send(&mut self, tag: u16, words: &[u64]) -> Result<()> {
        let bytes = frame(tag, words);
        self.sent += bytes.len() as u64;
        self.send_raw(bytes)
    }

    fn recv(&mut self, expect: &Expect) -> Result<Vec<u64>> {
        let bytes = self.rx.recv_timeout(self.timeout).map_err(|_| {
            Error::Link(format!(
                "mpc: no {} within {:?} (the other side disconnected or stalled)",
                expect.what, self.timeout
            ))
        })?;
        self.received += bytes.len() as u64;
        unframe(&bytes, expect)
    }

    fn exchange(&mut self, tag: u16, words: &[u64], expect: &Expect) -> Result<Vec<u64>> {
        self.send(tag, words)?;
        self.recv(expect)
    }

    fn bytes_sent(&self) -> u64 {
        self.sent
    }

    fn bytes_received(&self) -> u64 {
        self.received
    }
}

/// A link over TCP (loopback in `dptrain mpc-infer`).
pub struct TcpLink {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    sent: u64,
    received: u64,
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::Link(format!("mpc: {what}: {e} (the other side disconnected?)"))
}

impl TcpLink {
    /// Wraps a connected stream; every read and write times out after `timeout`.
    pub fn new(stream: TcpStream, timeout: Duration) -> Result<TcpLink> {
        let setup = |e| io_error("configuring the connection", e);
        stream.set_nodelay(true).map_err(setup)?;
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        let reader = BufReader::with_capacity(1 << 16, stream.try_clone().map_err(setup)?);
        Ok(TcpLink {
            reader,
            writer: BufWriter::with_capacity(1 << 16, stream),
            sent: 0,
            received: 0,
        })
    }

    fn write_frame(writer: &mut BufWriter<TcpStream>, tag: u16, words: &[u64]) -> Result<u64> {
        let what = "sending";
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        header[6..8].copy_from_slice(&tag.to_le_bytes());
        header[8..16].copy_from_slice(&(words.len() as u64).to_le_bytes());
        writer.write_all(&header).map_err(|e| io_error(what, e))?;
        for chunk in words.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|w| w.to_le_bytes()).collect();
            writer.write_all(&bytes).map_err(|e| io_error(what, e))?;
        }
        writer.flush().map_err(|e| io_error(what, e))?;
        Ok((HEADER + 8 * words.len()) as u64)
    }

    fn read_frame(reader: &mut BufReader<TcpStream>, expect: &Expect) -> Result<Vec<u64>> {
        let mut header = [0u8; HEADER];
        reader
            .read_exact(&mut header)
            .map_err(|e| io_error(&format!("receiving {}", expect.what), e))?;
        let words = check_header(&header, expect)?;
        let mut body = vec![0u8; 8 * words];
        reader
            .read_exact(&mut body)
            .map_err(|e| io_error(&format!("receiving {}", expect.what), e))?;
        Ok(words_of(&body))
    }
}

impl Link for TcpLink {
    fn send(&mut self, tag: u16, words: &[u64]) -> Result<()> {
        self.sent += Self::write_frame(&mut self.writer, tag, words)?;
        Ok(())
    }

    fn recv(&mut self, expect: &Expect) -> Result<Vec<u64>> {
        let words = Self::read_frame(&mut self.reader, expect)?;
        self.received += (HEADER + 8 * words.len()) as u64;
        Ok(words)
    }

    /// Writes on a second thread while reading, so two large simultaneous sends cannot
    /// fill both sockets' buffers and wait on each other.
    fn exchange(&mut self, tag: u16, words: &[u64], expect: &Expect) -> Result<Vec<u64>> {
        let (writer, reader) = (&mut self.writer, &mut self.reader);
        let (sent, got) = std::thread::scope(|s| {
            let sending = s.spawn(move || Self::write_frame(writer, tag, words));
            let got = Self::read_frame(reader, expect);
            let sent = sending
                .join()
                .unwrap_or_else(|_| Err(Error::Link("mpc: the sending thread failed".into())));
            (sent, got)
        });
        self.sent += sent?;
        let got = got?;
        self.received += (HEADER + 8 * got.len()) as u64;
        Ok(got)
    }

    fn bytes_sent(&self) -> u64 {
        self.sent
    }

    fn bytes_received(&self) -> u64 {
        self.received
    }
}
