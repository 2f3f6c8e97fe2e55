//! The library builds for browsers (wasm32-unknown-unknown on WebGPU). tools/web runs it in a
//! headless Chromium; this keeps the build from breaking where CI has no browser.

use std::path::Path;
use std::process::Command;

/// The wasm32 standard library, added through rustup when it is missing (as `cargo` fetches
/// crates): the quick start's test command then needs nothing more on a fresh machine.
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if !String::from_utf8_lossy(&out.stdout).contains("wasm32-unknown-unknown") => {
            let added = Command::new("rustup")
                .args(["target", "add", "wasm32-unknown-unknown"])
                .status();
            assert!(
                added.is_ok_and(|s| s.success()),
                "`rustup target add wasm32-unknown-unknown` failed"
            );
        }
        // Installed, or no rustup (a toolchain that has the target or not: the check says).
        _ => {}
    }
}

#[test]
fn library_builds_for_browsers() {
    ensure_target();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO"))
        .args([
            "check",
            "--lib",
            "-p",
            "tessera",
            "--target",
            "wasm32-unknown-unknown",
            "--quiet",
        ])
        .current_dir(root)
        // Its own folder: no wait on the build lock of the tests' own target folder.
        .env("CARGO_TARGET_DIR", root.join("target").join("wasm-check"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the library does not build for wasm32-unknown-unknown (`rustup target add \
         wasm32-unknown-unknown` if the target is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
