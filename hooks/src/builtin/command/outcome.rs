//! How one run ended, as the notifier and the gates read it, and how it is
//! told: `reitunnel_command_runs_total{command,role,outcome}` (`outcome`:
//! `ok`, `nonzero`, `failed`) and a log line with the start of the
//! program's output.

use super::program::{Finished, RunError};

/// What a run is for, the `role` label: `notify`, or the gate's question.
pub(crate) type Role = &'static str;

/// The notifier's role.
pub(crate) const NOTIFY: Role = "notify";

/// How one run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It exited 0.
    Ok(Finished),
    /// It exited with another code.
    Nonzero(Finished),
    /// It did not exit by itself: killed at its timeout or by a signal,
    /// or it could not start. The text says which.
    Failed(String),
}

impl Outcome {
    pub(crate) fn of(ran: Result<Finished, RunError>) -> Outcome {
        match ran {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(done) => match done.status.code() {
                Some(0) => Outcome::Ok(done),
                Some(_) => Outcome::Nonzero(done),
                None => Outcome::Failed(format!("it was killed ({})", done.status)),
            },
        }
    }

    /// For the notifier, where only exit 0 is success: why not, if not.
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Nonzero(done) => {
                Some(format!("{}: {}", done.status, done.stderr.first_line()))
            }
            Outcome::Failed(why) => Some(why.clone()),
        }
    }

    /// Counts the run and logs it: a failure to run as a warning, a
    /// non-zero exit as one for the notifier (for a gate it is a refusal,
    /// which the server logs), the rest at debug level.
    pub(crate) fn report(&self, program: &str, role: Role, what: &str) {
        let label = match self {
            Outcome::Ok(_) => "ok",
            Outcome::Nonzero(_) => "nonzero",
            Outcome::Failed(_) => "failed",
        };
        metrics::counter!("reitunnel_command_runs_total",
            "command" => program.to_owned(), "role" => role, "outcome" => label)
        .increment(1);
        match self {
            Outcome::Failed(why) => {
                tracing::warn!(command = program, role, what, error = %why, "command failed")
            }
            Outcome::Nonzero(done) if role == NOTIFY => tracing::warn!(
                command = program, role, what, status = %done.status,
                stdout = %done.stdout.shown(), stderr = %done.stderr.shown(), "command failed"
            ),
            Outcome::Nonzero(done) | Outcome::Ok(done) => tracing::debug!(
                command = program, role, what, status = %done.status,
                stdout = %done.stdout.shown(), stderr = %done.stderr.shown(), "command ran"
            ),
        }
    }
}
