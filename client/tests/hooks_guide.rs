//! The examples of docs/HOOKS.md, compiled and run, so the guide cannot
//! drift from the API: the `NoSsh` hook of section 8, driven by hand and
//! through a real server and client (section 9).

use reitunnel_hooks::{
    ClientId, ClientInfo, DataEvent, Direction, Gate, Hook, HookChain, Login, Reason, StreamId,
    StreamInfo, StreamState, TunnelId, TunnelInfo, TunnelKind, Verdict,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Refuses tunnels to port 22 and counts the bytes of each client name.
#[derive(Default)]
pub struct NoSsh {
    /// Bytes per client name, both directions (one entry per name ever seen).
    clients: Mutex<HashMap<Arc<str>, Arc<AtomicU64>>>,
}

impl NoSsh {
    /// Bytes moved by `client` so far, both directions.
    pub fn bytes(&self, client: &str) -> u64 {
        let map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(client).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

impl Hook for NoSsh {
    fn name(&self) -> &str {
        "no_ssh"
    }
    // Gate. `target` is the "host:port" the client named.
    fn on_tunnel_open(&self, tunnel: &TunnelInfo) -> Gate {
        let port = tunnel
            .target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        if port == Some(22) {
            return Gate::Refuse(Reason::forbidden("tunnels to port 22 are not allowed"));
        }
        Gate::Allow
    }
    // Once per stream: the lock is taken here, never per chunk.
    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        Some(Box::new(
            map.entry(stream.tunnel.client.name.clone())
                .or_default()
                .clone(),
        ))
    }
    // Per chunk: one relaxed add. `bytes()` includes what a Sampler skipped.
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        if let Some(counter) = ev.state::<Arc<AtomicU64>>() {
            counter.fetch_add(ev.bytes(), Ordering::Relaxed);
        }
        Verdict::Continue
    }
}

#[test]
fn no_ssh_driven_by_hand() -> Result<(), Box<dyn std::error::Error>> {
    let hook = Arc::new(NoSsh::default());
    let chain = HookChain::builder().shared(hook.clone()).build();
    let alice = Arc::new(ClientInfo::new(
        ClientId(1),
        "alice",
        "127.0.0.1:50000".parse()?,
    ));
    let (nonce, proof) = ([0u8; 32], [0u8; 32]); // nothing in this chain checks the proof
    let client = chain
        .open_client(
            alice.clone(),
            &Login {
                nonce: &nonce,
                proof: &proof,
            },
        )
        .unwrap();
    let tunnel = |id, target| {
        Arc::new(TunnelInfo::new(
            TunnelId(id),
            alice.clone(),
            TunnelKind::Reverse,
            "127.0.0.1:20000".parse().unwrap(),
            target,
        ))
    };
    assert_eq!(
        chain.open_tunnel(tunnel(1, "127.0.0.1:22")).unwrap_err().by,
        "no_ssh"
    );
    let web = chain.open_tunnel(tunnel(2, "127.0.0.1:3000")).unwrap();
    let visitor = "127.0.0.1:40000".parse()?;
    let stream = chain
        .open_stream(Arc::new(StreamInfo::new(
            StreamId(1),
            web.info().clone(),
            visitor,
        )))
        .unwrap();
    assert_eq!(
        stream.on_data(Direction::Ingress, &[0; 100]),
        Verdict::Continue
    );
    drop((stream, web, client)); // leaf first; each closes with CloseReason::Aborted
    assert_eq!(hook.bytes("alice"), 100);
    Ok(())
}

mod through_a_server {
    use super::NoSsh;
    use reitunnel_client::{Client, ClientConfig, ClientError};
    use reitunnel_hooks::testing::{assert_balanced, Recorded, Recorder};
    use reitunnel_hooks::{builtin::Secret, *};
    use reitunnel_server::{Server, ServerConfig};
    use std::sync::Arc;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_port_22_counts_bytes_and_balances() {
        let (no_ssh, rec) = (Arc::new(NoSsh::default()), Recorder::new());
        let chain = HookChain::builder()
            .shared(no_ssh.clone())
            .shared(rec.clone())
            .build();
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new("t")));
        cfg.default_bind_ip = "127.0.0.1".parse().unwrap();
        let server = Server::bind(cfg, chain).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap()
        });
        let cfg = ClientConfig::new(addr.to_string(), "alice", Secret::new("t"));
        let client = Client::connect(cfg, HookChain::default()).await.unwrap();
        let err = client
            .open_reverse("0:127.0.0.1:22".parse().unwrap())
            .await
            .err();
        assert!(matches!(
            err,
            Some(ClientError::TunnelRefused {
                code: RefuseCode::Forbidden,
                ..
            })
        ));
        let echo = reitunnel_testkit::echo_service().await;
        let tunnel = client
            .open_reverse(format!("0:{echo}").parse().unwrap())
            .await
            .unwrap();
        let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
        visitor.write_all(b"hello").await.unwrap();
        visitor.read_exact(&mut [0u8; 5]).await.unwrap(); // the echo
        drop(visitor);
        rec.wait_for("the stream's close", |ev| {
            ev.iter().any(|e| matches!(e, Recorded::StreamClose(..)))
        })
        .await;
        client.shutdown().await.unwrap();
        stop.send(()).unwrap();
        task.await.unwrap(); // run() returns after every close and on_server_stop
        assert_eq!(no_ssh.bytes("alice"), 10); // 5 bytes each way
        let ev = rec.events();
        assert!(
            ev.iter()
                .any(|e| matches!(e, Recorded::Rejected { by, .. } if by == "no_ssh")),
            "{ev:#?}"
        );
        assert_balanced(&ev); // one close per open, leaf first
    }
}
