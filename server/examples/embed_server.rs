//! A Reitunnel server inside your own program, with a hook of your own: a
//! per-user limit of visitors at once, refused with a reason past it.
//! `cargo run -p reitunnel-server --example embed_server` starts the
//! server, an echo service and a client with one tunnel to it, lets two
//! visitors in, turns the third away, and shuts down in order. `cargo
//! test` runs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reitunnel_client::{Client, ClientConfig};
use reitunnel_hooks::{
    Gate, Hook, HookChain, HookResult, Reason, Rejection, Scope, Secret, StreamEnd, StreamInfo,
};
use reitunnel_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// At most `max` visitors at once per client name. The gate takes a place
/// before saying `Allow`, so two visitors arriving together cannot both get
/// the last one; the place comes back when the stream closes, or at once if
/// a later hook refused the stream after this gate let it through.
struct VisitorsPerUser {
    max: usize,
    at_once: Mutex<HashMap<Arc<str>, usize>>,
}

impl VisitorsPerUser {
    fn give_back(&self, stream: &StreamInfo) {
        let mut at_once = self.at_once.lock().unwrap();
        if let Some(n) = at_once.get_mut(&stream.tunnel.client.name) {
            *n -= 1;
        }
    }
}

impl Hook for VisitorsPerUser {
    fn name(&self) -> &str {
        "visitors_per_user"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_stream_open(&self, stream: &StreamInfo) -> Gate {
        let user = &stream.tunnel.client.name;
        let mut at_once = self.at_once.lock().unwrap();
        let n = at_once.entry(user.clone()).or_default();
        if *n >= self.max {
            let why = format!("{user} already has {} visitors", self.max);
            return Gate::Refuse(Reason::limit_reached(why));
        }
        *n += 1;
        Gate::Allow
    }
    fn on_rejected(&self, rejection: &Rejection<'_>) {
        if let (Scope::Stream(stream), true) = (rejection.scope, rejection.passed_gate) {
            self.give_back(stream);
        }
    }
    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        self.give_back(end.stream);
        Ok(())
    }
}

/// One echo exchange on a new visitor connection: `true` if the tunnel let
/// it through, `false` if the server closed it.
async fn visit(public: std::net::SocketAddr) -> (TcpStream, bool) {
    let mut visitor = TcpStream::connect(public).await.unwrap();
    let _ = visitor.write_all(b"ping").await;
    let mut back = [0u8; 4];
    let through = visitor.read_exact(&mut back).await.is_ok();
    (visitor, through && &back == b"ping")
}

#[tokio::main]
async fn main() {
    let limit = VisitorsPerUser {
        max: 2,
        at_once: Mutex::default(),
    };
    let chain = HookChain::builder().hook(limit).build();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new("s3cret")));
    config.default_bind_ip = "127.0.0.1".parse().unwrap();
    let server = Server::bind(config, chain).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let echo = reitunnel_testkit::echo_service().await;
    let config = ClientConfig::new(addr.to_string(), "alice", Secret::new("s3cret"));
    let client = Client::connect(config, HookChain::default()).await.unwrap();
    let tunnel = client
        .open_reverse(format!("0:{echo}").parse().unwrap())
        .await
        .unwrap();
    println!("alice's tunnel: {} -> {echo}", tunnel.public_addr);

    let (first, one) = visit(tunnel.public_addr).await;
    let (second, two) = visit(tunnel.public_addr).await;
    let (_third, three) = visit(tunnel.public_addr).await;
    println!("visitors through: {one}, {two}, {three} (the third is over the limit)");
    assert!(one && two && !three);

    drop((first, second));
    client.shutdown().await.unwrap();
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        super::main();
    }
}
