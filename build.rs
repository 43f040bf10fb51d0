//! Link options for one binary only (cargo has no per-binary profile).

fn main() {
    // buntime-supervisor, one per sandbox for the sandbox's life: packed
    // relative relocations (DT_RELR, glibc 2.36, binutils 2.38). Its PIE
    // image (kept: it parses what the sandbox sends, and ASLR stays) has
    // ~14 000 relative relocations, 317 KiB of `.rela.dyn` that ld.so reads
    // at every start and that stays mapped; packed they take a few KiB.
    println!("cargo:rustc-link-arg-bin=buntime-supervisor=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
