//! Typed hook failures. A failure always names its hook.

use std::fmt;

use thiserror::Error;

use crate::hook::BoxError;

/// One hook's failure.
#[derive(Debug, Error)]
#[error("hook '{hook}' {kind}")]
pub struct HookError {
    /// The failing hook's [`crate::Hook::name`].
    pub hook: String,
    /// What went wrong.
    pub kind: HookErrorKind,
}

/// How a hook failed.
#[derive(Debug, Error)]
pub enum HookErrorKind {
    /// It returned an error.
    #[error("failed: {0}")]
    Failed(BoxError),
    /// It panicked; the panic was caught and the server went on.
    #[error("panicked: {0}")]
    Panicked(String),
}

impl HookError {
    pub(crate) fn failed(hook: &str, err: BoxError) -> Self {
        HookError {
            hook: hook.to_owned(),
            kind: HookErrorKind::Failed(err),
        }
    }

    pub(crate) fn panicked(hook: &str, payload: Box<dyn std::any::Any + Send>) -> Self {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        HookError {
            hook: hook.to_owned(),
            kind: HookErrorKind::Panicked(msg),
        }
    }
}

/// Every failure of one dispatch: one entry under `StopOnError`, all of them
/// under `CollectAndContinue`.
#[derive(Debug, Error)]
pub struct MultiError {
    /// The failures, in chain order.
    pub errors: Vec<HookError>,
}

impl fmt::Display for MultiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{n} hook{} failed", if n == 1 { "" } else { "s" })?;
        for (i, e) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
