//! Compiles the VIP pin mode's tc program (`bpf/vip_pin.bpf.c`) with clang into `OUT_DIR`,
//! where `src/sys/bpf.rs` embeds it. Without clang (or the libbpf headers) the object is left
//! empty and a warning says so: the verifier then runs pin mode on nftables, saying why at
//! start (`scripts/setup.sh` installs clang, llvm and libbpf-dev).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/vip_pin.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("vip_pin.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let built = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        // <asm/types.h>, which <linux/bpf.h> includes, lives in the host's multiarch directory.
        .args([
            "-I/usr/include/x86_64-linux-gnu",
            "-I/usr/include/aarch64-linux-gnu",
        ])
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status();
    match built {
        Ok(s) if s.success() => {}
        other => {
            println!(
                "cargo:warning=the VIP pin tc program was not built ({clang}: {other:?}); pin mode will use nftables"
            );
            std::fs::write(&out, []).expect("OUT_DIR is writable");
            // Built again once clang is installed (a path that does not exist reruns it).
            println!("cargo:rerun-if-changed=/usr/bin/clang");
        }
    }
}
