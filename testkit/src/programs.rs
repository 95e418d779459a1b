//! The two real programs, for tests that run them as processes. cargo hands
//! an integration test only its own package's binaries, and a test that
//! runs the server and the client together needs both: each is built here
//! by cargo (through escargot), once per test binary, from the current
//! sources. After `cargo test --workspace` that is a no-op for the server
//! and a short build for the client (the build of one package unifies
//! fewer features than the test build of all of them).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `reitunnel-server`, built.
pub fn server_program() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    built(&BUILT, "reitunnel-server")
}

/// `reitunnel-client`, built.
pub fn client_program() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    built(&BUILT, "reitunnel-client")
}

/// The binary `name` of the package of the same name, built with the
/// profile of the running test.
fn built(cell: &'static OnceLock<PathBuf>, name: &str) -> &'static Path {
    cell.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let run = escargot::CargoBuild::new()
            .manifest_path(workspace)
            .package(name)
            .bin(name)
            .current_release()
            .run()
            .unwrap_or_else(|e| panic!("building {name} with cargo: {e}"));
        run.path().to_owned()
    })
}
