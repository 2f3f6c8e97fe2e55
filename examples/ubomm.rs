use std::time::Instant;
use tessera::kernels::wgpu;
fn main() {
    let gpu = tessera::Gpu::shared().unwrap();
    let dev = gpu.device();
    let q = gpu.queue();
    let src = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let tm: f64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let tn: f64 = std::env::args().nth(3).unwrap().parse().unwrap();
    let ua = dev.create_buffer(&wgpu::BufferDescriptor { label: None, size: 65536, usage: wgpu::BufferUsages::UNIFORM, mapped_at_creation: false });
    let t = dev.create_texture(&wgpu::TextureDescriptor { label: None, size: wgpu::Extent3d { width: 256, height: 64, depth_or_array_layers: 1 }, mip_level_count: 1, sample_count: 1, dimension: wgpu::TextureDimension::D2, format: wgpu::TextureFormat::Rgba32Float, usage: wgpu::TextureUsages::TEXTURE_BINDING, view_formats: &[] });
    let tv = t.create_view(&Default::default());
    let out = dev.create_buffer(&wgpu::BufferDescriptor { label: None, size: 64 * 4 * 256, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(src.clone().into()) });
    let pipe = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor { label: None, layout: None, module: &module, entry_point: Some("main"), compilation_options: Default::default(), cache: None });
    let b1 = if src.contains("var tb") { wgpu::BindingResource::TextureView(&tv) } else { ua.as_entire_binding() };
    let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipe.get_bind_group_layout(0), entries: &[
        wgpu::BindGroupEntry { binding: 0, resource: ua.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 1, resource: b1 },
        wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
    ]});
    let groups = 16u32;
    let run = || {
        let mut enc = dev.create_command_encoder(&Default::default());
        { let mut p = enc.begin_compute_pass(&Default::default()); p.set_pipeline(&pipe); p.set_bind_group(0, &bg, &[]); p.dispatch_workgroups(groups, 1, 1); }
        q.submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    };
    run();
    let mut ts = vec![];
    for _ in 0..5 { let t = Instant::now(); run(); ts.push(t.elapsed().as_secs_f64()); }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t = ts[2];
    let flops = groups as f64 * 64.0 * 64.0 * 256.0 * 4.0 * 2.0 * tm * tn;
    println!("{:.2} ms {:.1} GFLOP/s", t * 1e3, flops / t / 1e9);
}
