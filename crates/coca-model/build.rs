//! With the `cuda` feature, compiles the CUDA kernels in `kernels/` to PTX (`$OUT_DIR/ptx.rs` holds one `&str`
//! constant per `.cu` file) with nvcc, through cudaforge, as candle-kernels builds candle's: same toolkit lookup
//! (`nvcc` on `PATH` or `CUDA_HOME`), same architecture (`CUDA_COMPUTE_CAP`, else `nvidia-smi`). The default build
//! compiles nothing and needs no CUDA.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    if let Err(e) = cuda::compile_kernels() {
        panic!("compiling coca-model's CUDA kernels: {e}");
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::PathBuf;

    pub(super) fn compile_kernels() -> cudaforge::Result<()> {
        println!("cargo::rerun-if-changed=kernels");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        cudaforge::KernelBuilder::new()
            .source_dir("kernels")
            .watch(["kernels/common.cuh"])
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()?
            .write(out.join("ptx.rs"))
    }
}
