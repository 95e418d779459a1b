use std::fmt;

use crate::event::{ClientInfo, Login, Reason, Verdict};
use crate::hook::Hook;

/// A secret whose `Debug` and `Display` never show it.
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

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// Accepts a client only if its login proves knowledge of one shared token.
/// Fails closed: a wrong proof is a `Reject` with an `AuthFailed` code.
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
