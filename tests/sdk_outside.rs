//! The guest SDK as a dependency of a crate outside this repository: `examples/guest-template`
//! is copied to a temporary directory, built against `guests/cell-guest` with nothing but
//! cargo (a `capnp` on PATH that fails if run: the bindings come checked in with `cell-proto`),
//! and run under
//! the real `cell`, talking to a TCP server on 127.0.0.1 through `futures::io`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the template to `dir`, pointing its `cell-guest` dependency at this checkout.
fn copy_template(dir: &Path) {
    let template = repo().join("examples/guest-template");
    std::fs::create_dir_all(dir.join("src")).expect("src dir");
    let sdk = repo().join("guests/cell-guest");
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).expect("template manifest");
    let manifest = manifest.replace(
        "cell-guest = { path = \"../../guests/cell-guest\" }",
        &format!("cell-guest = {{ path = {:?} }}", sdk.display().to_string()),
    );
    assert!(
        manifest.contains(&sdk.display().to_string()),
        "dependency line not rewritten"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("manifest");
    for file in ["Cargo.lock", "src/main.rs"] {
        std::fs::copy(template.join(file), dir.join(file)).expect("copy template file");
    }
}

/// `cargo build` of the copied crate with a `capnp` first on PATH that fails the build if
/// anything runs it (the host's own tools — cargo, the linker for build scripts — stay).
fn build_outside(dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").expect("cargo test sets CARGO");
    let trap = dir.join("trap-bin");
    std::fs::create_dir_all(&trap).expect("trap dir");
    let capnp = trap.join("capnp");
    std::fs::write(
        &capnp,
        "#!/bin/sh\necho \"capnp was run: $*\" >&2\nexit 99\n",
    )
    .expect("trap");
    std::fs::set_permissions(&capnp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = std::env::join_paths(std::iter::once(trap.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("outside-guest-target");
    let mut cmd = Command::new(&cargo);
    cmd.env("PATH", path)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir);
    // Nothing of this workspace's build leaks into the outside crate's.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key.starts_with("RUSTFLAGS") {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().expect("running cargo");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("capnp was run"),
        "the build ran capnp:\n{log}"
    );
    assert!(
        out.status.success(),
        "building the outside guest failed:\n{log}"
    );
    target.join("wasm32-wasip2/release/guest-template.wasm")
}

/// One connection: reads to end of stream, answers it in upper case, closes.
fn upper_server() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        conn.write_all(&got.to_ascii_uppercase()).expect("write");
        got
    });
    (port, server)
}

#[test]
fn a_guest_crate_outside_the_repository_builds_with_only_cargo_and_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_template(dir.path());
    let wasm = build_outside(dir.path());
    let (port, server) = upper_server();
    let net = format!("connect=127.0.0.1:{port}");
    let out = Cell::run_path(&wasm)
        .net(&[&net])
        .arg(port.to_string())
        .finish();
    out.assert_code(0)
        .assert_stderr_has("template: pid 0 grants [\"executor\", \"network\"]")
        .assert_stderr_has("template: terminal refused: not-granted")
        .assert_stderr_has(&format!("template: restricted to [\"{net}\"]"))
        .assert_stderr_has("template: server answered \"HELLO FROM OUTSIDE\"");
    assert_eq!(server.join().expect("server"), b"hello from outside");
}
