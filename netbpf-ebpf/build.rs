//! Rebuild the programs when the bpf-linker binary changes (it is an
//! undeclared build dependency; `cargo xtask` installs it).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
