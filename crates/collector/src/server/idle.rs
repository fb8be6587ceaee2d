//! Connections that go quiet are closed: a socket wrapper that fails its reads once no byte has
//! moved in either direction for a while.
//!
//! Why in the socket rather than in hyper or tonic: a connection that never sends a byte (or that
//! stops between requests) costs a task and buffers for as long as it stays open, and neither
//! hyper's HTTP/2 nor tonic has an idle limit; one wrapper serves the OTLP/HTTP and the gRPC
//! listeners alike. The server always has a read pending on an idle connection, so polling the
//! timer inside `poll_read` is enough: when it fires, the read fails with `TimedOut` and the
//! server drops the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Stands for "no limit": far enough never to fire, near enough not to overflow an `Instant`.
const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A stream closed (its reads fail) after `limit` without a byte read or written.
pub struct IdleLimited<S> {
    inner: S,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleLimited<S> {
    /// `None`: never closed for being idle.
    pub fn new(inner: S, limit: Option<Duration>) -> Self {
        let limit = limit.unwrap_or(NO_LIMIT).min(NO_LIMIT);
        IdleLimited {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn touch(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.limit);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleLimited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection idle for {:?}", self.limit),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleLimited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            if *n > 0 {
                self.touch();
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &written {
            if *n > 0 {
                self.touch();
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for IdleLimited<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_quiet_stream_fails_its_read_after_the_limit_and_traffic_keeps_it_open() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleLimited::new(server, Some(LIMIT));
        let mut byte = [0u8; 1];

        // Traffic every 150 ms keeps it open well past the limit.
        let started = Instant::now();
        for _ in 0..6 {
            tokio::time::sleep(LIMIT / 2).await;
            client.write_all(b"x").await.unwrap();
            server.read_exact(&mut byte).await.unwrap();
        }
        assert!(started.elapsed() > LIMIT * 2);
        let quiet_from = Instant::now();
        let err = server.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = quiet_from.elapsed();
        assert!(
            waited >= LIMIT && waited < LIMIT * 3,
            "closed after {waited:?}"
        );
    }

    #[tokio::test]
    async fn writing_counts_as_activity() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleLimited::new(server, Some(LIMIT));
        tokio::time::sleep(LIMIT * 2 / 3).await;
        server.write_all(b"y").await.unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.unwrap();
        let quiet_from = Instant::now();
        let err = server.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(quiet_from.elapsed() >= LIMIT * 9 / 10);
    }

    #[tokio::test]
    async fn without_a_limit_a_quiet_stream_stays_open() {
        let (_client, server) = tokio::io::duplex(64);
        let mut server = IdleLimited::new(server, None);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(LIMIT, server.read_exact(&mut byte)).await;
        assert!(read.is_err(), "the read is still pending");
    }
}
