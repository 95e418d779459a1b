//! `reitunnel-client`: the command-line front of [`reitunnel_client`]; the
//! program itself is [`reitunnel_client::app`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = reitunnel_client::app::Args::parse();
    reitunnel_program::tune_allocator();
    // On a terminal the status block shows what `info` lines would.
    let terminal = std::io::stdout().is_terminal();
    reitunnel_program::init_logging_at(if terminal { "warn" } else { "info" });
    reitunnel_client::app::main(args)
}
