//! A deadline on a client's first bytes.
//!
//! hyper-util's auto (HTTP/1.1 + HTTP/2) connection reads the first bytes
//! itself to tell the two apart, before hyper's own `header_read_timeout`
//! is armed; a client that connects (or finishes its TLS handshake) and then
//! stays silent would hold its connection slot forever. This wrapper fails
//! reads with `TimedOut` once the deadline passes without a byte; after the
//! first byte it is inert.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An IO object whose reads fail if no byte arrived within a deadline.
#[derive(Debug)]
pub struct FirstBytes<T> {
    io: T,
    /// Armed until the first byte is read.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> FirstBytes<T> {
    /// Wraps `io`; the first byte must arrive within `timeout` from now.
    pub fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytes<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        match (&poll, this.deadline.as_mut()) {
            (_, None) => poll,
            (Poll::Ready(Ok(())), Some(_)) if buf.filled().len() > before => {
                this.deadline = None;
                poll
            }
            (Poll::Pending, Some(deadline)) => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within header_read_timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            _ => poll,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytes<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silence_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(a, Duration::from_secs(10));
        let mut buf = [0u8; 1];
        let err = io.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_first_byte_there_is_no_deadline() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(a, Duration::from_secs(10));
        b.write_all(b"G").await.expect("write");
        let mut buf = [0u8; 1];
        io.read_exact(&mut buf).await.expect("first byte");
        tokio::time::sleep(Duration::from_secs(60)).await;
        b.write_all(b"E").await.expect("write");
        io.read_exact(&mut buf).await.expect("later byte");
        assert_eq!(&buf, b"E");
    }
}
