//! Every shader parses and validates with naga, in its f32 and f16 forms. No GPU needed.

use std::path::Path;

use tessera::kernels::{specialize, DType, SHADERS};

fn validate(name: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
}

#[test]
fn every_shader_file_validates_as_f32_and_f16() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shaders found in {}", dir.display());
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap();
        assert!(
            source.contains("alias T = f32;"),
            "{name}.wgsl must declare `alias T = f32;` for the dtype substitution"
        );
        validate(name, &specialize(&source, DType::F32));
        validate(&format!("{name} (f16)"), &specialize(&source, DType::F16));
    }
}

#[test]
fn the_kernel_crate_embeds_every_shader_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        let embedded = SHADERS.iter().find(|(n, _)| *n == name);
        assert_eq!(embedded.map(|(_, s)| *s), Some(on_disk.as_str()), "{name}");
    }
}
