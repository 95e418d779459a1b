//! `reitunnel-server`: the command-line front of [`reitunnel_server`]; the
//! program itself is [`reitunnel_server::app`].

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = reitunnel_server::app::Args::parse();
    reitunnel_program::tune_allocator();
    reitunnel_program::init_logging();
    reitunnel_server::app::main(args)
}
