use std::fmt;

use crate::event::{ClientInfo, Login, Reason, Verdict};
use crate::hook::Hook;

/// A secret whose `Debug` and `Display` never show it.
///
/// # Example
///
/// ```
/// use reitunnel_hooks::builtin::Secret;
///
/// let token = Secret::new("hunter2");
/// assert_eq!(format!("{token} {token:?}"), "MASKED Secret(MASKED)");
/// assert_eq!(token.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(MASKED)")
    }
}

/// From a command-line argument: a secret is any text.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// From a config file: a secret is a string, masked from then on.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// Accepts a client only if its login proves knowledge of one shared token.
/// Fails closed: a wrong proof is a `Reject` with an `AuthFailed` code.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::{Secret, TokenAuth};
/// use reitunnel_hooks::{ClientId, ClientInfo, HookChain, Login, RefuseCode};
///
/// let chain = HookChain::builder()
///     .hook(TokenAuth::new(Secret::new("s3cret")))
///     .build();
/// let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// let nonce = [0u8; 32];
///
/// // The client proves the token for its name without sending it.
/// let good = reitunnel_proto::auth::proof(b"s3cret", &nonce, "alice");
/// let session = chain.open_client(alice.clone(), &Login { nonce: &nonce, proof: &good }).unwrap();
/// drop(session);
///
/// let bad = reitunnel_proto::auth::proof(b"guess", &nonce, "alice");
/// let refusal = chain
///     .open_client(alice, &Login { nonce: &nonce, proof: &bad })
///     .unwrap_err();
/// assert_eq!(refusal.by, "token_auth");
/// assert_eq!(refusal.reason.code, RefuseCode::AuthFailed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TokenAuth {
    token: Secret,
}

impl TokenAuth {
    /// Requires `token` of every client.
    pub fn new(token: Secret) -> Self {
        TokenAuth { token }
    }
}

impl Hook for TokenAuth {
    fn name(&self) -> &str {
        "token_auth"
    }

    fn wants_data(&self) -> bool {
        false
    }

    fn on_client_connect(&self, client: &ClientInfo, login: &Login<'_>) -> Verdict {
        if login.proves(&client.name, self.token.expose().as_bytes()) {
            Verdict::Continue
        } else {
            Verdict::Reject(Reason::auth_failed(
                "token refused: the token does not match the server's",
            ))
        }
    }
}
