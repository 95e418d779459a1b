//! A minimal HTTP/1.1 client for tests of the server's HTTP endpoints:
//! one request per connection, the whole answer read, or an event stream
//! read line by line. Enough for `/metrics`, the admin API and SSE.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;

/// An answer: its status code, its header block, its body as text.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, as sent.
    pub head: String,
    /// The body (chunked encoding undone).
    pub body: String,
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await?;
    Ok(tcp)
}

/// Sends one request (with a bearer token if given) and reads the whole answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> io::Result<HttpResponse> {
    http_with(addr, method, path, token, &[]).await
}

/// Like [`http`], with extra request headers; a `Host` among them replaces
/// the default one (the address connected to).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let mut tcp = send(addr, method, path, token, headers).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {raw:?}"),
        )
    };
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        head: head.to_owned(),
        body,
    })
}

/// Joins the chunks of a chunked body.
fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// Opens an event stream (`text/event-stream`) and returns its lines,
/// header lines first; read them with `next_line`.
pub async fn event_stream(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> io::Result<Lines<BufReader<TcpStream>>> {
    let tcp = send(addr, "GET", path, token, &[]).await?;
    Ok(BufReader::new(tcp).lines())
}
