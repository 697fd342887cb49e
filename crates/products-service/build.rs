//! Generates the gRPC server/client code and the encoded descriptor set that
//! server reflection serves, from the public contract in `proto/`.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/products.proto";
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("products_descriptor.bin"))
        .compile_protos(&[proto], &["../../proto"])?;
    println!("cargo:rerun-if-changed={proto}");

    // Build info for the `build_info` metric: PRODUCTS_GIT_SHA when given (the
    // Docker build has no .git), else git, else "unknown".
    let from_env = env::var("PRODUCTS_GIT_SHA").ok().filter(|s| !s.is_empty());
    let git_sha = from_env
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|sha| sha.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PRODUCTS_GIT_SHA={git_sha}");
    println!("cargo:rerun-if-env-changed=PRODUCTS_GIT_SHA");
    Ok(())
}
