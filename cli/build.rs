//! The CLI links libtorch through the library's rlib and needs the same rpath (and the forced
//! libtorch_cuda) as the cdylib: the library's build script is the one place that knows how.
#[path = "../build.rs"]
mod library_build;

fn main() {
    println!("cargo:rerun-if-changed=../build.rs");
    library_build::main();
}
