use std::time::Instant;
use tessera::kernels::wgpu;
fn main() {
    let gpu = tessera::Gpu::shared().unwrap();
    let dev = gpu.device();
    let q = gpu.queue();
    let n: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(512);
    let src = std::fs::read_to_string(std::env::args().nth(2).unwrap()).unwrap();
    let tex = |rows: u32, k4: u32| {
        let t = dev.create_texture(&wgpu::TextureDescriptor { label: None, size: wgpu::Extent3d { width: k4, height: rows, depth_or_array_layers: 1 }, mip_level_count: 1, sample_count: 1, dimension: wgpu::TextureDimension::D2, format: wgpu::TextureFormat::Rgba32Float, usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST, view_formats: &[] });
        let data: Vec<f32> = (0..rows * k4 * 4).map(|i| ((i % 7) as f32) * 0.1).collect();
        q.write_texture(t.as_image_copy(), bytemuck_cast(&data), wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(k4 * 16), rows_per_image: None }, t.size());
        t
    };
    let ta = tex(n, n / 4);
    let tb = tex(n, n / 4);
    let out = dev.create_buffer(&wgpu::BufferDescriptor { label: None, size: (n * n * 4) as u64, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(src.into()) });
    let pipe = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor { label: None, layout: None, module: &module, entry_point: Some("main"), compilation_options: Default::default(), cache: None });
    let va = ta.create_view(&Default::default());
    let vb = tb.create_view(&Default::default());
    let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipe.get_bind_group_layout(0), entries: &[
        wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&va) },
        wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&vb) },
        wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
    ]});
    let tx: u32 = std::env::var("TX").map(|s| s.parse().unwrap()).unwrap_or(32); let ty: u32 = std::env::var("TY").map(|s| s.parse().unwrap()).unwrap_or(32);
    let run = || {
        let mut enc = dev.create_command_encoder(&Default::default());
        { let mut p = enc.begin_compute_pass(&Default::default()); p.set_pipeline(&pipe); p.set_bind_group(0, &bg, &[]); p.dispatch_workgroups(n / tx, n / ty, 1); }
        q.submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    };
    run();
    let mut ts = vec![];
    for _ in 0..5 { let t = Instant::now(); run(); ts.push(t.elapsed().as_secs_f64()); }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t = ts[2];
    println!("n={n} {:.2} ms {:.1} GFLOP/s", t * 1e3, 2.0 * (n as f64).powi(3) / t / 1e9);
}
fn bytemuck_cast(v: &[f32]) -> &[u8] { unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) } }
