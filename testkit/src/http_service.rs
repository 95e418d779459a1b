//! A small HTTP/1.1 service for tests of what the server asks over HTTP
//! (the `http_auth` gate): each request's body goes to the test's handler,
//! whose answer is sent back, or never sent (a service that hangs). Every
//! body is kept, in order, for the test to read. Threads, one per
//! connection, so both sync and async tests can use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the handler says to one request.
pub enum Reply {
    /// This status and JSON body.
    Json(u16, String),
    /// Nothing, ever: the connection stays open and silent.
    Hang,
}

/// A running service: its address and the bodies it was sent.
#[derive(Clone)]
pub struct HttpService {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl HttpService {
    /// Starts the service; `handler` answers each request body.
    pub fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> HttpService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (handler, kept) = (handler.clone(), kept.clone());
                std::thread::spawn(move || serve(conn, &*handler, &kept));
            }
        });
        HttpService { addr, bodies }
    }

    /// Every request body so far, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Answers the requests of one connection until it closes.
fn serve(
    conn: TcpStream,
    handler: &(dyn Fn(&str) -> Reply + Send + Sync),
    kept: &Mutex<Vec<String>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        kept.lock().unwrap().push(body.clone());
        match handler(&body) {
            Reply::Json(status, json) => {
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                );
                if out.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Hang => {
                // Hold the connection until the peer gives up.
                let _ = reader.read_to_end(&mut Vec::new());
                return;
            }
        }
    }
}
