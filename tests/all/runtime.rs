//! Adapter choice, the GL fallback, the buffer pool and error reporting.

use tessera::kernels::matmul::{matmul_cpu, MatmulSpec};
use tessera::{Backend, DType, Gpu, GpuOptions, KernelError, Tensor};

use crate::common::{gpu, rel_error, values};

#[test]
fn shared_adapter_reports_itself() {
    let gpu = gpu();
    let s = gpu.summary();
    assert!(!s.name.is_empty());
    assert!(
        ["Vulkan", "Metal", "Dx12", "Gl"].contains(&s.backend.as_str()),
        "{}",
        s.backend
    );
    assert!(gpu.limits().max_storage_buffers_per_shader_stage >= 8);
}

#[test]
fn backend_names_parse() {
    assert_eq!("vulkan".parse::<Backend>(), Ok(Backend::Vulkan));
    assert_eq!("GL".parse::<Backend>(), Ok(Backend::Gl));
    assert_eq!("dx12".parse::<Backend>(), Ok(Backend::Dx12));
    assert_eq!("metal".parse::<Backend>(), Ok(Backend::Metal));
    assert!("cuda".parse::<Backend>().is_err());
}

#[test]
fn unknown_adapter_name_is_a_clear_error() {
    let err = Gpu::new(&GpuOptions {
        backend: None,
        adapter_name: Some("no-such-adapter-xyz".into()),
        ..GpuOptions::default()
    })
    .unwrap_err();
    assert!(matches!(err, KernelError::NoAdapter { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-adapter-xyz") && msg.contains("mesa-vulkan-drivers"),
        "{msg}"
    );
}

/// The fallback when no Vulkan/Metal/DX12 driver exists: wgpu's GL backend (Mesa llvmpipe
/// through EGL on Linux), f32 only.
#[test]
fn matmul_runs_on_the_gl_backend() {
    let gl = Gpu::new(&GpuOptions {
        backend: Some(Backend::Gl),
        ..GpuOptions::default()
    })
    .unwrap_or_else(|e| panic!("the GL backend must be available: {e}"));
    assert_eq!(gl.summary().backend, "Gl");
    let gl = std::sync::Arc::new(gl);
    let (m, n, k) = (19, 23, 37);
    let a = values(m * k, 31);
    let w = values(n * k, 32);
    let ta = Tensor::from_slice(&gl, &a, &[m, k], DType::F32).unwrap();
    let tw = Tensor::from_slice(&gl, &w, &[n, k], DType::F32).unwrap();
    let got = ta.linear(&tw, None).unwrap().to_vec().unwrap();
    let spec = MatmulSpec {
        trans_b: true,
        ..MatmulSpec::new(m, n, k)
    };
    let want = matmul_cpu(&spec, &a, &w, None, None);
    assert!(rel_error(&got, &want) <= 1e-4);
}

#[test]
fn pool_reuses_released_buffers() {
    // A private device so other tests' allocations do not interfere.
    let gpu = std::sync::Arc::new(Gpu::new(&GpuOptions::from_env().unwrap()).unwrap());
    let before = gpu.pool_stats();
    let t = Tensor::zeros(&gpu, &[1000, 10], DType::F32).unwrap();
    let live = gpu.pool_stats().live_bytes;
    assert!(live >= before.live_bytes + 40_000);
    drop(t);
    gpu.sync().unwrap();
    let pooled = gpu.pool_stats().pooled_bytes;
    assert!(
        pooled >= 40_000,
        "released buffer should be pooled: {pooled}"
    );
    let again = Tensor::zeros(&gpu, &[10, 1000], DType::F32).unwrap();
    assert_eq!(
        gpu.pool_stats().pooled_bytes,
        pooled - (live - before.live_bytes)
    );
    assert_eq!(again.to_vec().unwrap(), vec![0.0; 10_000]);
}

#[test]
fn profiling_times_each_kernel_and_leaves_results_alone() {
    // A private device: the profile would also gather other tests' kernels.
    let gpu = std::sync::Arc::new(Gpu::new(&GpuOptions::from_env().unwrap()).unwrap());
    let (m, n, k) = (5, 6, 7);
    let a = values(m * k, 51);
    let w = values(n * k, 52);
    let ta = Tensor::from_slice(&gpu, &a, &[m, k], DType::F32).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[n, k], DType::F32).unwrap();
    assert!(gpu.take_profile().is_empty(), "profiling starts off");
    gpu.set_profiling(true);
    let got = ta
        .linear(&tw, None)
        .unwrap()
        .activation(tessera::Activation::Relu)
        .unwrap();
    assert_eq!(
        gpu.pending_dispatches(),
        0,
        "each kernel is waited for while profiling"
    );
    let times = gpu.take_profile();
    let matmul = times
        .iter()
        .find(|t| t.kernel.starts_with("matmul"))
        .unwrap_or_else(|| panic!("no matmul in {times:?}"));
    assert_eq!(matmul.calls, 1);
    assert!(matmul.seconds > 0.0);
    assert!(
        times.iter().any(|t| t.kernel.ends_with("::unary")),
        "{times:?}"
    );
    assert!(
        times.windows(2).all(|p| p[0].seconds >= p[1].seconds),
        "slowest first: {times:?}"
    );
    gpu.set_profiling(false);
    ta.linear(&tw, None).unwrap();
    assert!(
        gpu.take_profile().is_empty(),
        "profiling off gathers nothing"
    );
    assert!(gpu.pending_dispatches() >= 1, "batched again");
    let spec = MatmulSpec {
        trans_b: true,
        ..MatmulSpec::new(m, n, k)
    };
    let want: Vec<f32> = matmul_cpu(&spec, &a, &w, None, None)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    assert!(rel_error(&got.to_vec().unwrap(), &want) <= 1e-4);
}

#[test]
fn many_dispatches_go_in_one_submit() {
    // A private device: other tests' read-backs would submit the shared one's recording.
    let gpu = std::sync::Arc::new(Gpu::new(&GpuOptions::from_env().unwrap()).unwrap());
    let x = Tensor::from_slice(&gpu, &values(64, 41), &[8, 8], DType::F32).unwrap();
    let eye: Vec<f32> = (0..64)
        .map(|i| if i % 9 == 0 { 1.0 } else { 0.0 })
        .collect();
    let id = Tensor::from_slice(&gpu, &eye, &[8, 8], DType::F32).unwrap();
    let mut y = x.clone();
    // More dispatches than one params arena holds, all recorded before the single read-back.
    for _ in 0..300 {
        y = y.matmul(&id).unwrap();
    }
    assert!(gpu.pending_dispatches() >= 300);
    assert_eq!(y.to_vec().unwrap(), x.to_vec().unwrap());
}

#[test]
fn oversized_buffers_are_refused() {
    let gpu = gpu();
    let limit = gpu.limits().max_storage_buffer_binding_size;
    let err = gpu.alloc("test", limit + 4).unwrap_err();
    assert!(matches!(err, KernelError::Limit { .. }), "{err}");
}

/// The `async` device and read-back (what a browser awaits) give what the blocking ones do.
#[test]
fn device_and_read_back_as_futures() {
    let gpu = std::sync::Arc::new(
        pollster::block_on(tessera::Gpu::new_async(
            &tessera::GpuOptions::from_env().unwrap(),
        ))
        .unwrap(),
    );
    assert_eq!(gpu.info().name, crate::common::gpu().info().name);
    let a = tessera::Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[2, 2], tessera::DType::F32)
        .unwrap();
    let product = a.matmul(&a).unwrap();
    let got = pollster::block_on(product.to_vec_async()).unwrap();
    assert_eq!(got, vec![7.0, 10.0, 15.0, 22.0]);
    assert_eq!(got, product.to_vec().unwrap());
}
