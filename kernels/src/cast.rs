//! Launcher for `shaders/cast_widen.wgsl` and `shaders/cast_narrow.wgsl`: contiguous element
//! type conversion between f32 and f16 (the CPU reference is `half`'s rounding).

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::Result;
use crate::pool::GpuBuffer;
use crate::runtime::{Gpu, KernelKey, IN_OUT_BINDINGS};

const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    total: u32,
    row_pitch: u32,
}

/// Records `dst[i] = to(src[i])` for `total` elements; a copy when the dtypes agree.
pub fn cast(
    gpu: &Gpu,
    from: DType,
    to: DType,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    total: usize,
) -> Result<()> {
    src.check_holds("cast", "source", total, from)?;
    dst.check_holds("cast", "destination", total, to)?;
    if total == 0 {
        return Ok(());
    }
    if from == to {
        gpu.copy(src, dst, (total * from.size()) as u64);
        return Ok(());
    }
    // Both kernels are specialised for the half side.
    gpu.check_dtype("cast", DType::F16)?;
    let (shader, source, entry) = if from == DType::F16 {
        ("cast_widen", crate::modules::CAST_WIDEN, "cast_widen")
    } else {
        ("cast_narrow", crate::modules::CAST_NARROW, "cast_narrow")
    };
    let (grid, row_pitch) = gpu.grid_1d(total, WORKGROUP);
    let kernel = gpu.kernel(&KernelKey {
        shader,
        source,
        entry,
        dtype: DType::F16,
        constants: vec![],
        bindings: IN_OUT_BINDINGS,
    })?;
    gpu.dispatch(
        &kernel,
        &[src.into(), dst.into()],
        bytemuck::bytes_of(&Params {
            total: total as u32,
            row_pitch,
        }),
        grid,
    )
}
