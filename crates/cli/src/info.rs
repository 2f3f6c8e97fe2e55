//! `tessera info`.

use serde_json::json;
use tessera::kernels::wgpu::Features;
use tessera::Gpu;

/// Prints the adapter, backend, driver, enabled features and the limits kernels care about.
pub fn run(json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::shared()?;
    let s = gpu.summary();
    let l = gpu.limits();
    let features: Vec<&str> = [
        (Features::SHADER_F16, "SHADER_F16"),
        (Features::SUBGROUP, "SUBGROUP"),
        (Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
    ]
    .into_iter()
    .filter(|(f, _)| gpu.features().contains(*f))
    .map(|(_, n)| n)
    .collect();
    let limits = [
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        ),
        ("max_buffer_size", l.max_buffer_size),
        (
            "max_uniform_buffer_binding_size",
            l.max_uniform_buffer_binding_size,
        ),
        (
            "max_texture_dimension_2d",
            l.max_texture_dimension_2d as u64,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
    ];
    if json {
        let limits: serde_json::Map<String, serde_json::Value> = limits
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let out = json!({
            "adapter": s.name,
            "backend": s.backend,
            "device_type": s.device_type,
            "driver": s.driver,
            "driver_info": s.driver_info,
            "features": features,
            "limits": limits,
        });
        println!("{out}");
    } else {
        println!("adapter      {}", s.name);
        println!("backend      {}", s.backend);
        println!("device type  {}", s.device_type);
        println!("driver       {} {}", s.driver, s.driver_info);
        println!(
            "features     {}",
            if features.is_empty() {
                "(none)".to_string()
            } else {
                features.join(" ")
            }
        );
        println!("limits");
        for (k, v) in limits {
            println!("  {k:<40} {v}");
        }
    }
    Ok(())
}
