//! JSON bodies for the answers hyper gives itself. A request whose head hyper cannot parse never reaches the router:
//! hyper answers it `400` (a malformed request line or header), `414` (a request target over its 65,534 bytes) or
//! `431` (a head over [`MAX_REQUEST_HEAD_BYTES`] or with more than [`MAX_REQUEST_HEADERS`] headers), with no body,
//! and closes the connection. [`JsonErrors`] wraps each connection's socket and writes such an answer with the
//! server's error body (`{"code": .., "message": ".."}`) in its place, so every error answer of the server is JSON.
//! hyper has no hook for these answers; its bodyless `content-length: 0` head is what tells them apart (every answer
//! of the router to an error carries a JSON body).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::ApiError;

/// Most bytes of a request's head (request line and headers) the server reads: 96 KiB (hyper's `max_header_size`,
/// and its read buffer, `max_buf_size`). It takes a request target of up to hyper's own limit (65,534 bytes: a key path of 64 KiB) and
/// 32 KiB of headers; a longer head is answered `431`. It bounds the memory of a connection that sends a head
/// (hyper's default, about 400 KiB, let 4096 connections take 1.6 GB).
pub const MAX_REQUEST_HEAD_BYTES: usize = 96 << 10;

/// Most headers of a request: 100 (hyper's default, stated here); one more is answered `431`.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// hyper's longest request target (its `MAX_URI_LEN`); a longer one is answered `414`.
pub const MAX_URI_BYTES: usize = u16::MAX as usize - 1;

// hyper refuses a read buffer under 8 KiB; the head limit must take hyper's longest request target.
const _: () = assert!(MAX_REQUEST_HEAD_BYTES >= 8192 && MAX_REQUEST_HEAD_BYTES > MAX_URI_BYTES + 1024);

/// A connection's socket as hyper sees it: hyper's own bodyless `400`, `414` and `431` answers are written with a
/// JSON body instead (see the [module docs](self)); everything else passes through unchanged.
pub struct JsonErrors<S> {
    inner: S,
    /// The answer written in place of hyper's, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonErrors<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner, pending: None }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is left of the answer written in place of hyper's.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, done)) = &mut self.pending {
            if *done == answer.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = with_json_body(buf) {
            // hyper's whole answer is taken; ours goes out in its place (the rest of it on the next write, flush or
            // shutdown, which hyper makes before it closes).
            self.pending = Some((answer, 0));
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// When `written` is exactly one of hyper's own bodyless `400`, `414` or `431` answers, the same answer with the
/// server's JSON error body.
fn with_json_body(written: &[u8]) -> Option<Vec<u8>> {
    const EMPTY: &str = "\r\ncontent-length: 0\r\n";
    let head = std::str::from_utf8(written).ok()?;
    if !head.ends_with("\r\n\r\n") || head.matches("\r\n\r\n").count() != 1 {
        return None;
    }
    let status = head.strip_prefix("HTTP/1.1 ").or_else(|| head.strip_prefix("HTTP/1.0 "))?;
    let code: u16 = status.get(..3)?.parse().ok()?;
    let at = head.to_ascii_lowercase().find(EMPTY)?;
    let message = match code {
        400 => "the request is not well-formed HTTP/1.1: its request line or a header could not be parsed; see \
                docs/CLI.md for the API"
            .to_string(),
        414 => format!(
            "the request target is over {MAX_URI_BYTES} bytes, the longest the server reads; shorten it (a key of the \
             data API is read by its percent-encoded path)"
        ),
        431 => format!(
            "the request head (request line and headers) is over {MAX_REQUEST_HEAD_BYTES} bytes or has more than \
             {MAX_REQUEST_HEADERS} headers, the most the server reads; send fewer or shorter headers"
        ),
        _ => return None,
    };
    let body = serde_json::to_string(&ApiError { code, message }).ok()?;
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(&head[..at]);
    out.push_str(&format!("\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    out.push_str(&head[at + EMPTY.len()..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_s_own_answers_get_the_json_body_and_nothing_else_changes() {
        let hyper_431 =
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: \
                         Wed, 02 Dec 2026 22:47:28 GMT\r\n\r\n";
        let out = String::from_utf8(with_json_body(hyper_431.as_bytes()).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n") && head.ends_with("GMT"), "{head}");
        let e: ApiError = serde_json::from_str(body).unwrap();
        assert_eq!(e.code, 431);
        assert!(e.message.contains("98304 bytes") && e.message.contains("100 headers"), "{}", e.message);
        for code in ["400 Bad Request", "414 URI Too Long"] {
            let answer = format!("HTTP/1.1 {code}\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n");
            assert!(with_json_body(answer.as_bytes()).is_some(), "{code}");
        }
        // The router's answers (a body, another status, a head not whole) pass as they are.
        for other in [
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
            "{\"code\":400,\"message\":\"HTTP/1.1 400 \"}",
        ] {
            assert!(with_json_body(other.as_bytes()).is_none(), "{other}");
        }
    }
}
