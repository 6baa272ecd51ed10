//! Binary framing: `len:u32 BE | stream:u32 BE | kind:u8 | payload[len]`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload a single frame may carry. Larger transfers are split into many
/// [`FrameKind::Data`] frames.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;

const HEADER_LEN: usize = 9;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Agent → host on stream 0 once the guest is ready; JSON [`crate::Hello`].
    /// Host → agent on stream 0 with an empty payload: a *knock*, answered with another
    /// Hello (virtio-serial may drop what the agent wrote before the host connected, so
    /// the host knocks until a Hello arrives; extra Hellos are ignored).
    Hello = 0,
    /// Host → agent: opens a stream; JSON [`crate::Request`].
    Request = 1,
    /// Raw bytes on an open stream; first payload byte is a [`crate::message::DataChannel`].
    Data = 2,
    /// The sender has no more data for this stream (payload empty).
    DataEnd = 3,
    /// Agent → host: closes a stream; JSON [`crate::Response`].
    Response = 4,
    /// Host → agent: abandon the work of a stream (payload empty).
    Cancel = 5,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Hello,
            1 => Self::Request,
            2 => Self::Data,
            3 => Self::DataEnd,
            4 => Self::Response,
            5 => Self::Cancel,
            _ => return None,
        })
    }
}

/// One unit on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Stream the frame belongs to; 0 is reserved for [`FrameKind::Hello`].
    pub stream: u32,
    /// Meaning of the payload.
    pub kind: FrameKind,
    /// Payload bytes (at most [`MAX_FRAME_PAYLOAD`]).
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame whose payload is `value` serialised as JSON.
    pub fn json<T: serde::Serialize>(stream: u32, kind: FrameKind, value: &T) -> Self {
        let payload = serde_json::to_vec(value).expect("protocol messages always serialise");
        Self { stream, kind, payload }
    }

    /// A [`FrameKind::Data`] frame on `channel`.
    pub fn data(stream: u32, channel: crate::message::DataChannel, bytes: &[u8]) -> Self {
        let mut payload = Vec::with_capacity(bytes.len() + 1);
        payload.push(channel as u8);
        payload.extend_from_slice(bytes);
        Self { stream, kind: FrameKind::Data, payload }
    }

    /// An empty frame of `kind` (used for [`FrameKind::DataEnd`] and [`FrameKind::Cancel`]).
    pub fn empty(stream: u32, kind: FrameKind) -> Self {
        Self { stream, kind, payload: Vec::new() }
    }

    /// Decodes the JSON payload.
    pub fn parse_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|e| FrameError::Json(e.to_string()))
    }

    /// Splits a data frame into its channel and bytes.
    pub fn split_data(&self) -> Result<(crate::message::DataChannel, &[u8]), FrameError> {
        let (&first, rest) = self.payload.split_first().ok_or(FrameError::EmptyData)?;
        let channel = crate::message::DataChannel::from_byte(first).ok_or(FrameError::UnknownChannel(first))?;
        Ok((channel, rest))
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("guest channel I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a payload larger than [`MAX_FRAME_PAYLOAD`].
    #[error("guest channel frame too large: {0} bytes")]
    TooLarge(usize),
    /// The kind byte is not one we know.
    #[error("guest channel sent unknown frame kind {0}")]
    UnknownKind(u8),
    /// A data frame without its channel byte.
    #[error("guest channel sent an empty data frame")]
    EmptyData,
    /// A data frame naming an unknown channel.
    #[error("guest channel sent unknown data channel {0}")]
    UnknownChannel(u8),
    /// A JSON payload that does not decode.
    #[error("guest channel sent malformed JSON: {0}")]
    Json(String),
}

/// Reads one frame; `Ok(None)` on a clean end of stream before any header byte.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    let stream = u32::from_be_bytes(header[4..8].try_into().unwrap());
    let kind = FrameKind::from_byte(header[8]).ok_or(FrameError::UnknownKind(header[8]))?;
    if len > MAX_FRAME_PAYLOAD + 1 {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(Frame { stream, kind, payload }))
}

/// Writes one frame (header and payload) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> Result<(), FrameError> {
    if frame.payload.len() > MAX_FRAME_PAYLOAD + 1 {
        return Err(FrameError::TooLarge(frame.payload.len()));
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + frame.payload.len());
    buf.extend_from_slice(&(frame.payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&frame.stream.to_be_bytes());
    buf.push(frame.kind as u8);
    buf.extend_from_slice(&frame.payload);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frames: &[Frame]) -> Vec<Frame> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut buf = Vec::new();
            for f in frames {
                write_frame(&mut buf, f).await.unwrap();
            }
            let mut cursor = std::io::Cursor::new(buf);
            let mut out = Vec::new();
            while let Some(f) = read_frame(&mut cursor).await.unwrap() {
                out.push(f);
            }
            out
        })
    }

    fn kind_strategy() -> impl Strategy<Value = FrameKind> {
        prop_oneof![
            Just(FrameKind::Hello),
            Just(FrameKind::Request),
            Just(FrameKind::Data),
            Just(FrameKind::DataEnd),
            Just(FrameKind::Response),
            Just(FrameKind::Cancel),
        ]
    }

    proptest! {
        #[test]
        fn frames_roundtrip(frames in proptest::collection::vec(
            (any::<u32>(), kind_strategy(), proptest::collection::vec(any::<u8>(), 0..2048))
                .prop_map(|(stream, kind, payload)| Frame { stream, kind, payload }),
            0..16))
        {
            prop_assert_eq!(roundtrip(&frames), frames);
        }

        #[test]
        fn truncated_input_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut cursor = std::io::Cursor::new(bytes);
                // Any result is fine as long as decoding arbitrary bytes never panics.
                while let Ok(Some(_)) = read_frame(&mut cursor).await {}
            });
        }
    }

    #[test]
    fn oversized_length_is_rejected() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut bytes = ((MAX_FRAME_PAYLOAD as u32) + 2).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 1, 1]);
        let err = rt.block_on(read_frame(&mut std::io::Cursor::new(bytes))).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = vec![0, 0, 0, 0, 0, 0, 0, 1, 99];
        let err = rt.block_on(read_frame(&mut std::io::Cursor::new(bytes))).unwrap_err();
        assert!(matches!(err, FrameError::UnknownKind(99)));
    }

    /// Fuzz harness for [`read_frame`] on what a hostile guest can send: random bytes, and
    /// valid frame streams with bytes flipped, lengths rewritten to edge values, kinds
    /// changed and the stream cut short, read through a reader that hands out bytes in
    /// random chunk sizes (so partial headers are exercised). Every decoded frame must
    /// respect the size cap and re-encode to the bytes it came from. `PYRO_FUZZ_CASES`
    /// (default 5000) sets the case count, `PYRO_FUZZ_SEED` the seed (printed); a watchdog
    /// aborts if one case runs past 5 s. Run with scripts/fuzz.sh.
    #[test]
    #[ignore = "fuzz harness: scripts/fuzz.sh, or PYRO_FUZZ_CASES=N cargo test --release -p pyro-protocol fuzz -- --ignored"]
    fn fuzz_read_frame() {
        use std::pin::Pin;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Poll};
        use std::time::{Duration, Instant};

        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            fn below(&mut self, n: usize) -> usize {
                (self.next() % n as u64) as usize
            }
        }

        /// Hands out at most a random number of bytes per read.
        struct Chunky {
            bytes: Vec<u8>,
            at: usize,
            rng: Rng,
        }
        impl AsyncRead for Chunky {
            fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
                let this = &mut *self;
                let left = this.bytes.len() - this.at;
                let n = left.min(buf.remaining()).min(1 + this.rng.below(64 * 1024));
                buf.put_slice(&this.bytes[this.at..this.at + n]);
                this.at += n;
                Poll::Ready(Ok(()))
            }
        }

        fn env(name: &str) -> Option<u64> {
            std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number")))
        }
        let cases = env("PYRO_FUZZ_CASES").unwrap_or(5_000);
        let seed = env("PYRO_FUZZ_SEED").unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
        let only = env("PYRO_FUZZ_CASE");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let started = Instant::now();
        let current = Arc::new(AtomicU64::new(0));
        let began = Arc::new(AtomicU64::new(0));
        let watchdog = {
            let (current, began) = (current.clone(), began.clone());
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(50));
                let case = current.load(Ordering::Acquire);
                if case == u64::MAX {
                    return;
                }
                let since = Duration::from_nanos(began.load(Ordering::Acquire));
                if case != 0 && current.load(Ordering::Acquire) == case && started.elapsed().saturating_sub(since) > Duration::from_secs(5) {
                    eprintln!("[fuzz] frame decoder: case {} hangs (replay: PYRO_FUZZ_SEED={seed} PYRO_FUZZ_CASE={})", case - 1, case - 1);
                    std::process::abort();
                }
            })
        };
        let (mut frames_read, mut ran) = (0u64, 0u64);
        for case in 0..cases {
            if only.is_some_and(|o| o != case) {
                continue;
            }
            let mut rng = Rng(seed ^ case.wrapping_mul(0xd134_2543_de82_ef95));
            rng.next();
            let mut bytes = Vec::new();
            if rng.below(4) == 0 {
                bytes = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            } else {
                for _ in 0..=rng.below(4) {
                    let len = [0, 1, 2, 100, 4096, MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD + 1][rng.below(7)].min(rng.below(70_000));
                    let frame =
                        Frame { stream: rng.next() as u32, kind: FrameKind::from_byte(rng.below(6) as u8).unwrap(), payload: vec![rng.next() as u8; len] };
                    rt.block_on(write_frame(&mut bytes, &frame)).unwrap();
                }
                for _ in 0..rng.below(4) {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = rng.below(bytes.len());
                    match rng.below(4) {
                        0 => bytes[at] ^= 1 << rng.below(8),
                        1 => {
                            let edge =
                                [0u32, 1, 9, MAX_FRAME_PAYLOAD as u32, MAX_FRAME_PAYLOAD as u32 + 1, MAX_FRAME_PAYLOAD as u32 + 2, u32::MAX / 2, u32::MAX]
                                    [rng.below(8)];
                            let end = (at + 4).min(bytes.len());
                            bytes[at..end].copy_from_slice(&edge.to_be_bytes()[..end - at]);
                        }
                        2 => bytes[at] = rng.below(256) as u8,
                        _ => bytes.truncate(at),
                    }
                }
            }
            began.store(started.elapsed().as_nanos() as u64, Ordering::Release);
            current.store(case + 1, Ordering::Release);
            let input = bytes.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(async {
                    let mut reader = Chunky { bytes, at: 0, rng: Rng(rng.next()) };
                    let mut consumed = 0usize;
                    let mut read = 0u64;
                    while let Ok(Some(frame)) = read_frame(&mut reader).await {
                        assert!(frame.payload.len() <= MAX_FRAME_PAYLOAD + 1);
                        let mut again = Vec::new();
                        write_frame(&mut again, &frame).await.unwrap();
                        assert_eq!(again[..], input[consumed..consumed + again.len()]);
                        consumed += again.len();
                        read += 1;
                    }
                    read
                })
            }));
            current.store(0, Ordering::Release);
            ran += 1;
            match outcome {
                Ok(read) => frames_read += read,
                Err(_) => {
                    current.store(u64::MAX, Ordering::Release);
                    panic!("[fuzz] frame decoder: case {case} panicked (replay: PYRO_FUZZ_SEED={seed} PYRO_FUZZ_CASE={case})");
                }
            }
        }
        current.store(u64::MAX, Ordering::Release);
        watchdog.join().unwrap();
        let total = started.elapsed().as_secs_f64();
        eprintln!(
            "[fuzz] frame decoder: {ran} cases in {total:.1} s ({:.1} µs/case), {frames_read} frames decoded, 0 panics, 0 hangs; seed {seed}",
            total * 1e6 / ran.max(1) as f64
        );
    }
}
