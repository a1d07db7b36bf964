//! Builds the BPF programs in `bpf-rs/` and hands the object to `include_bytes_aligned!`.
//!
//! The BPF target needs `-Z build-std=core`, which the rustup toolchain here
//! cannot do (no rust-src); Debian's rustc-web/cargo-web with rust-web-src can
//! (see bpf-rs/README.md). `make setup` installs them and bpf-linker.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..").canonicalize().unwrap();
    let bpf_dir = root.join("bpf-rs");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    for p in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("crates/bpfcap-common/src").display());
    for var in ["BPFCAP_BPF_CARGO", "BPFCAP_BPF_RUSTC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let cargo = env::var("BPFCAP_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = env::var("BPFCAP_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    // A target dir of its own: the outer cargo holds a lock on ours.
    let target_dir = root.join("target/bpf");
    // bpf-linker is installed by `make setup` into /usr/local/bin.
    let path = format!("/usr/local/bin:{}", env::var("PATH").unwrap_or_default());

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&bpf_dir)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path);
    // Nothing of the outer (host) build may leak into the BPF build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC_WRAPPER")
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo} to build the BPF programs ({e}); run `make setup` first"));
    if !status.success() {
        panic!("building bpf-rs/ failed ({status}); `make setup` installs the BPF toolchain");
    }
    let obj = target_dir.join("bpfel-unknown-none/release/bpfcap");
    std::fs::copy(&obj, out_dir.join("bpfcap.bpf.o")).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
}
