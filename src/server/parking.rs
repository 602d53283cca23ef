//! The client socket as hyper sees it, able to outlive a hyper connection.
//!
//! hyper keeps a read buffer (8–16 KiB) and a write buffer (8 KiB) for the
//! whole life of an HTTP/1.1 connection, idle or not. A keep-alive connection
//! that has been quiet for [`super::deadlines::PARK_AFTER`] is therefore
//! *parked*: weir stops hyper's connection without closing the socket
//! (`graceful_shutdown` on an idle connection, with the socket's shutdown
//! ignored), keeps any bytes hyper had read, and waits for the client with no
//! buffer at all. The bytes that wake it up are handed to a fresh hyper
//! connection ahead of the socket, like the bytes read to tell HTTP/2 from
//! HTTP/1.1.
//!
//! On HTTP/1.1 it also holds back hyper's own answers. To a request head it
//! cannot read (malformed, or over `max_header_size` or `max_headers`),
//! hyper answers an empty 400 or 431 by itself, and only then reports the
//! error. Such an answer is the only thing hyper writes when every response
//! it was given has been flushed and no request has begun since
//! ([`Activity::all_answered`]); the socket keeps it back, and weir sends
//! its own in its place (see `super::refusal`).

use std::future::{self, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::deadlines::Activity;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most a parked connection reads when its client wakes it up; hyper reads the rest.
const WAKE_READ: usize = 1024;
/// How much of an answer hyper wrote on its own is kept: enough for its status line.
const HELD_MAX: usize = 256;

/// A client socket with bytes already read from it put back in front.
#[derive(Debug)]
pub struct ClientIo<I> {
    inner: I,
    /// Read from the socket but not yet by hyper.
    unread: Bytes,
    activity: Arc<Activity>,
    /// HTTP/1.1: hyper's own answers are held back.
    hold_back: bool,
    /// The start of an answer hyper wrote on its own, kept from the client.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes in every connection's task rather than 24, for a rare answer"
    )]
    held: Option<Box<Vec<u8>>>,
}

impl<I: AsyncRead + Unpin> ClientIo<I> {
    /// Wraps the socket of the connection whose state is `activity`.
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            unread: Bytes::new(),
            activity,
            hold_back: false,
            held: None,
        }
    }

    /// Reads enough to tell whether the client speaks HTTP/2 with prior
    /// knowledge (h2c), and gives the socket back, with what was read kept
    /// for hyper.
    ///
    /// Not an `async fn`, which would hold the socket twice (as its argument
    /// and as the receiver of the read) while the connection's task waits for
    /// the client's first bytes.
    pub fn detect_h2(self) -> impl Future<Output = io::Result<(Self, bool)>> + Send
    where
        I: Send,
    {
        let mut io = Some(self);
        let mut seen = [0u8; H2_PREFACE.len()];
        let mut len = 0;
        future::poll_fn(move |cx| {
            // `None`: polled again after it was ready.
            let Some(this) = io.as_mut() else {
                return Poll::Pending;
            };
            // At most one read per preface byte.
            while len < seen.len() {
                let mut read = ReadBuf::new(&mut seen[len..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                if n == 0 {
                    break;
                }
                len += n;
                if seen[..len] != H2_PREFACE[..len] {
                    break;
                }
            }
            this.unread = Bytes::copy_from_slice(&seen[..len]);
            let h2 = seen[..len] == *H2_PREFACE;
            io.take()
                .map_or(Poll::Pending, |io| Poll::Ready(Ok((io, h2))))
        })
    }

    /// The state of the connection this socket belongs to.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Puts `bytes`, which hyper had read but not used, back in front. They
    /// are copied: they are a view of hyper's whole read buffer, which is
    /// what parking releases.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut both = BytesMut::with_capacity(bytes.len() + self.unread.len());
        both.extend_from_slice(bytes);
        both.extend_from_slice(&self.unread);
        self.unread = both.freeze();
    }

    /// Whether bytes are waiting to be read by hyper.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Waits for the client to send something and keeps it for hyper: `false`
    /// when the client closed the connection instead. The socket's deadlines
    /// (idle, then header) still apply.
    pub async fn wait_for_client(&mut self) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_wait_for_client(cx)).await
    }

    fn poll_wait_for_client(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        // On the stack only while polled: a parked connection holds no buffer.
        let mut buf = [0u8; WAKE_READ];
        let mut read = ReadBuf::new(&mut buf);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
        self.unread = Bytes::copy_from_slice(read.filled());
        Poll::Ready(Ok(!self.unread.is_empty()))
    }
}

impl<I> ClientIo<I> {
    /// From now on, keeps back what hyper writes on its own (HTTP/1.1 only:
    /// an HTTP/2 connection writes frames of its own all the time).
    pub fn hold_back_own_answers(&mut self) {
        self.hold_back = true;
    }

    /// The status of the answer hyper wrote on its own and that was held
    /// back, if any; from now on nothing more is held back.
    pub fn take_held_answer(&mut self) -> Option<StatusCode> {
        self.hold_back = false;
        let held = self.held.take()?;
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut answer = httparse::Response::new(&mut headers);
        // Only the status line is needed; what follows may not fit in `HELD_MAX`.
        let _ = answer.parse(&held);
        // hyper answers only with statuses it can write; should one not
        // parse, the client still gets an answer.
        let status = answer.code.and_then(|c| StatusCode::from_u16(c).ok());
        Some(status.unwrap_or(StatusCode::BAD_REQUEST))
    }

    /// Whether what hyper writes now is kept from the client.
    fn holds_back(&self) -> bool {
        self.hold_back && (self.held.is_some() || self.activity.all_answered())
    }

    fn hold(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let held = self.held.get_or_insert_default();
        let room = HELD_MAX.saturating_sub(held.len());
        held.extend_from_slice(bytes.get(..room).unwrap_or(bytes));
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        if n == this.unread.len() {
            // Dropped, not advanced: an empty slice would keep its buffer
            // for the life of the connection.
            this.unread = Bytes::new();
        } else {
            this.unread.advance(n);
        }
        if this.unread.is_empty() && buf.remaining() > 0 {
            // And what the socket has, in the same read: hyper grows its
            // buffer from 8 to 16 KiB when one read leaves the head incomplete.
            // An error will come again on the next read.
            let _ = Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holds_back() {
            this.hold(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holds_back() {
            bufs.iter().for_each(|b| this.hold(b));
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held.is_some() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.hold_back {
            this.activity.on_flush();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Parking: hyper is done with the connection, the client is not: no
        // FIN (nor TLS close_notify, this being outside TLS). An answer held
        // back: weir's own goes out first.
        if this.activity.is_parking() || this.held.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn pair() -> (ClientIo<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(4096);
        (ClientIo::new(server, Activity::new()), client)
    }

    async fn read_all(io: &mut ClientIo<DuplexStream>) -> Vec<u8> {
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("read");
        all
    }

    #[tokio::test]
    async fn an_http2_preface_is_recognised_and_kept() {
        let (io, mut client) = pair();
        client.write_all(H2_PREFACE).await.expect("write");
        client.write_all(b"frames").await.expect("write");
        drop(client);
        let (mut io, h2) = io.detect_h2().await.expect("sniff");
        assert!(h2);
        assert_eq!(
            read_all(&mut io).await,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframes"
        );
    }

    #[tokio::test]
    async fn http1_is_told_apart_at_its_first_byte_and_kept() {
        let (io, mut client) = pair();
        let head = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        client.write_all(head).await.expect("write");
        let (mut io, h2) = io.detect_h2().await.expect("sniff");
        assert!(!h2);
        drop(client);
        assert_eq!(read_all(&mut io).await, head);
    }

    #[tokio::test]
    async fn a_preface_cut_short_is_not_http2() {
        let (io, mut client) = pair();
        client.write_all(&H2_PREFACE[..10]).await.expect("write");
        drop(client);
        let (mut io, h2) = io.detect_h2().await.expect("sniff");
        assert!(!h2);
        assert_eq!(read_all(&mut io).await, &H2_PREFACE[..10]);
    }

    #[tokio::test]
    async fn bytes_put_back_come_before_the_socket_and_before_older_ones() {
        let (mut io, mut client) = pair();
        client.write_all(b"GET").await.expect("write");
        assert!(io.wait_for_client().await.expect("wait"));
        io.unread(b"> ");
        client.write_all(b" /").await.expect("write");
        drop(client);
        assert_eq!(read_all(&mut io).await, b"> GET /");
    }

    #[tokio::test]
    async fn one_read_returns_the_unread_bytes_and_what_the_socket_has() {
        let (mut io, mut client) = pair();
        client.write_all(b"GET").await.expect("write");
        assert!(io.wait_for_client().await.expect("wait"));
        client.write_all(b" / HTTP/1.1").await.expect("write");
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET / HTTP/1.1");
    }

    /// What the client has received so far, without waiting for more.
    async fn received(client: &mut DuplexStream) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        match tokio::time::timeout(std::time::Duration::from_millis(10), client.read(&mut buf))
            .await
        {
            Ok(n) => buf[..n.expect("read")].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    #[tokio::test]
    async fn hypers_own_answer_is_held_back_once_every_response_is_flushed() {
        let (mut io, mut client) = pair();
        io.hold_back_own_answers();
        let busy = io.activity().clone().begin();
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        drop(busy);
        // The response's end, written after its body was done but before the flush.
        io.write_all(b"tail").await.expect("write");
        io.flush().await.expect("flush");
        assert_eq!(received(&mut client).await, b"HTTP/1.1 200 OK\r\n\r\ntail");

        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        io.write_all(own).await.expect("write");
        io.flush().await.expect("flush");
        io.shutdown().await.expect("shutdown");
        assert_eq!(received(&mut client).await, b"", "held back, and no FIN");
        assert_eq!(
            io.take_held_answer(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        io.write_all(b"weir's").await.expect("write");
        assert_eq!(received(&mut client).await, b"weir's");
    }

    #[tokio::test]
    async fn nothing_is_held_back_unless_asked_or_while_a_request_is_in_progress() {
        let (mut io, mut client) = pair();
        io.write_all(b"frames").await.expect("write");
        io.flush().await.expect("flush");
        assert_eq!(received(&mut client).await, b"frames", "HTTP/2: never");
        io.hold_back_own_answers();
        let _busy = io.activity().clone().begin();
        io.flush().await.expect("flush");
        io.write_all(b"100 Continue").await.expect("write");
        assert_eq!(received(&mut client).await, b"100 Continue");
        assert_eq!(io.take_held_answer(), None);
    }

    #[tokio::test]
    async fn waiting_for_a_client_that_leaves_says_so() {
        let (mut io, client) = pair();
        drop(client);
        assert!(!io.wait_for_client().await.expect("wait"));
        assert!(!io.has_unread());
    }
}
