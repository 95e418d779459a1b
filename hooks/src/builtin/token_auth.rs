use crate::hook::Hook;
use crate::info::{ClientInfo, Login};
use crate::verdict::{Gate, Reason};
use crate::Secret;

/// Accepts a client only if its login proves knowledge of one shared token.
/// Fails closed: a wrong proof is a `Refuse` with an `AuthFailed` code.
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

    fn on_client_connect(&self, client: &ClientInfo, login: &Login<'_>) -> Gate {
        if login.proves(&client.name, self.token.expose().as_bytes()) {
            Gate::Allow
        } else {
            Gate::Refuse(Reason::auth_failed(
                "token refused: the token does not match the server's",
            ))
        }
    }
}
