//! A webhook's health in the metrics, through a real Prometheus recorder
//! installed for this test binary alone (the delivery task runs on the
//! runtime's threads, where only a global recorder reaches): delivered and
//! failed events per endpoint, and the health gauge.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use reitunnel_hooks::builtin::{Secret, Webhook, WebhookConfig, UNHEALTHY_AFTER};
use reitunnel_hooks::events::{Event, EventSink};
use reitunnel_testkit::prometheus_value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An endpoint answering every request with `status`, once it has read
/// the request's headers.
async fn endpoint(status: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn webhook(addr: SocketAddr) -> std::sync::Arc<Webhook> {
    Webhook::new(WebhookConfig {
        url: format!("http://{addr}/hook?key=not-in-the-labels"),
        secret: Secret::new("s"),
        events: Vec::new(),
        timeout: Duration::from_secs(5),
        retries: 0,
        queue: 16,
        tls: None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_failures_and_health_per_endpoint() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let (good, bad) = (endpoint(200).await, endpoint(500).await);
    let (to_good, to_bad) = (webhook(good), webhook(bad));
    for n in 0..UNHEALTHY_AFTER {
        to_good.emit(&Event::now("tunnel.opened").with("n", n));
        to_bad.emit(&Event::now("tunnel.opened").with("n", n));
    }
    for hook in [&to_good, &to_bad] {
        assert!(hook.drain(Duration::from_secs(30)).await, "all settled");
    }
    let text = handle.render();
    let series = |name: &str, addr: SocketAddr| format!("{name}{{endpoint=\"{addr}\"}}");
    let all = Some(f64::from(UNHEALTHY_AFTER));
    assert_eq!(
        prometheus_value(&text, &series("reitunnel_webhook_delivered_total", good)),
        all,
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, &series("reitunnel_webhook_failed_total", bad)),
        all,
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, &series("reitunnel_webhook_healthy", good)),
        Some(1.0),
        "{text}"
    );
    // UNHEALTHY_AFTER deliveries given up in a row make the endpoint unhealthy.
    assert_eq!(
        prometheus_value(&text, &series("reitunnel_webhook_healthy", bad)),
        Some(0.0),
        "{text}"
    );
    assert!(
        !text.contains("not-in-the-labels"),
        "the URL's path stays out: {text}"
    );
}
