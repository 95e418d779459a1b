//! `reitunnel-client`: the command-line front of [`reitunnel_client`]; the
//! program itself is [`reitunnel_client::app`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = reitunnel_client::app::Args::parse();
    reitunnel_transport::cli::tune_allocator();
    reitunnel_transport::cli::init_logging();
    reitunnel_client::app::main(args)
}
