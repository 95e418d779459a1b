//! Test support shared by Reitunnel's tests and its soak script.
//!
//! [`FaultProxy`] sits between a client and a server (or anything that
//! speaks TCP) and does to their link what real networks do: delay it, cut
//! it, black-hole it so both ends think it is still up, throttle it, or stop
//! reading one way so backpressure builds. Tests drive it while traffic
//! flows and check that both ends notice, recover and account for every
//! stream.
//!
//! Beside it, what tests on every crate share: an [`echo_service`],
//! replayable [`pseudo_random`] payloads checked with [`same_echo`], and
//! [`within`], a failure guard for a future; [`Process`], a child
//! whose output tests wait on line by line; and [`http`], a minimal HTTP
//! client for the server's metrics and admin endpoints; the two programs
//! built for process tests ([`server_program`], [`client_program`]); nginx and HAProxy
//! set up to read and send the PROXY protocol, dnsmasq and dig for UDP, and
//! a [`RedisServer`] that can be killed and restarted on its port.

//!
//! ```
//! use reitunnel_testkit::{pseudo_random, same_echo};
//!
//! let sent = pseudo_random(7, 4096);
//! assert_eq!(sent, pseudo_random(7, 4096), "replayable from its seed");
//! assert!(same_echo(&sent, &sent, "a test tunnel").is_ok());
//! let mut garbled = sent.clone();
//! garbled[100] ^= 1;
//! let e = same_echo(&sent, &garbled, "a test tunnel").unwrap_err();
//! assert!(e.contains("a test tunnel"), "{e}");
//! ```

#![forbid(unsafe_code)]

mod bytes;
mod fault;
mod http;
mod http_service;
mod process;
mod programs;
mod prometheus;
mod redis;
mod service;
mod tools;

pub use bytes::{pseudo_random, same_echo};
pub use fault::{FaultProxy, Toward};
pub use http::{event_stream, http, http_with, HttpResponse};
pub use http_service::{HttpService, Reply};
pub use process::{Frozen, Lines, Process};
pub use programs::{client_program, server_program};
pub use prometheus::prometheus_value;
pub use redis::{RedisServer, REDIS_SERVER};
pub use service::{
    echo_service, echo_service_on_threads, firehose_service, udp_echo_service, within,
};
pub use tools::{
    chromium, dig, dnsmasq_answering, free_port, haproxy_sending_proxy_v2, installed,
    nginx_showing_proxy_protocol, DIG, DNSMASQ, HAPROXY, NGINX,
};
