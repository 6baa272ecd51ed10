//! The frame transport between a guest NIC and the gateway: QEMU's `-netdev stream` framing, a
//! 4-byte big-endian length followed by one Ethernet frame, over any byte stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::error::NetError;

/// The largest frame a link accepts by default (a 64 KiB frame plus its Ethernet header).
pub const MAX_FRAME: usize = 65536 + 14;

/// A frame link over a byte stream such as a unix socket.
#[derive(Debug)]
pub struct StreamLink<T> {
    io: T,
    max_frame: usize,
}

impl<T> StreamLink<T> {
    /// A link over `io` accepting frames up to [`MAX_FRAME`] bytes.
    pub fn new(io: T) -> StreamLink<T> {
        StreamLink { io, max_frame: MAX_FRAME }
    }

    /// The same link accepting frames up to `max_frame` bytes.
    pub fn with_max_frame(self, max_frame: usize) -> StreamLink<T> {
        StreamLink { max_frame, ..self }
    }
}

impl<T: AsyncRead + Unpin> StreamLink<T> {
    /// The next frame, or `None` when the peer closed the stream at a frame boundary. A length
    /// above the limit is an error, and nothing of that size is allocated.
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, NetError> {
        let mut header = [0u8; 4];
        match self.io.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(NetError::Link(e)),
        }
        let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
        if len > self.max_frame {
            return Err(NetError::FrameTooLarge { len, max: self.max_frame });
        }
        let mut frame = vec![0u8; len];
        self.io.read_exact(&mut frame).await.map_err(NetError::Link)?;
        Ok(Some(frame))
    }
}

impl<T: AsyncWrite + Unpin> StreamLink<T> {
    /// Sends one frame (refusing one above the limit, which the peer could not accept either).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.len() > self.max_frame {
            return Err(NetError::FrameTooLarge { len: frame.len(), max: self.max_frame });
        }
        let len = u32::try_from(frame.len()).map_err(|_| NetError::FrameTooLarge { len: frame.len(), max: self.max_frame })?;
        let mut buf = Vec::with_capacity(4 + frame.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(frame);
        self.io.write_all(&buf).await.map_err(NetError::Link)?;
        self.io.flush().await.map_err(NetError::Link)
    }
}

impl<T: AsyncRead + AsyncWrite> StreamLink<T> {
    /// Splits the link into a reading and a writing half, each with the same limit.
    pub fn split(self) -> (StreamLink<ReadHalf<T>>, StreamLink<WriteHalf<T>>) {
        let (r, w) = tokio::io::split(self.io);
        (StreamLink { io: r, max_frame: self.max_frame }, StreamLink { io: w, max_frame: self.max_frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_eof_ends_cleanly() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = StreamLink::new(a);
        let mut b = StreamLink::new(b);
        a.write_frame(b"hello").await.unwrap();
        a.write_frame(b"").await.unwrap();
        drop(a);
        assert_eq!(b.read_frame().await.unwrap().unwrap(), b"hello");
        assert_eq!(b.read_frame().await.unwrap().unwrap(), b"");
        assert!(b.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_length_is_refused() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut b = StreamLink::new(b);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = b.read_frame().await.unwrap_err();
        assert_eq!(err.kind(), "frame_too_large");
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut b = StreamLink::new(b).with_max_frame(100);
        a.write_all(&101u32.to_be_bytes()).await.unwrap();
        assert!(matches!(b.read_frame().await, Err(NetError::FrameTooLarge { len: 101, max: 100 })));
        assert!(b.write_frame(&[0; 101]).await.is_err());
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut b = StreamLink::new(b);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert_eq!(b.read_frame().await.unwrap_err().kind(), "link_io");
    }
}
