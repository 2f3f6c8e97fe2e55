//! Every shader module parses and validates with naga, in its f32 and f16 forms, and every
//! WGSL file on disk is compiled into the kernels as it is. No GPU needed.

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
fn every_shader_module_validates_as_f32_and_f16() {
    assert!(!SHADERS.is_empty());
    for (name, files) in SHADERS {
        let source: String = files.iter().map(|(_, text)| format!("{text}\n")).collect();
        assert_eq!(
            source.matches("alias T = f32;").count(),
            1,
            "{name} must declare `alias T = f32;` once, for the dtype substitution"
        );
        validate(name, &specialize(&source, DType::F32));
        validate(&format!("{name} (f16)"), &specialize(&source, DType::F16));
    }
}

#[test]
fn every_shader_file_is_embedded_as_on_disk() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        count += 1;
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        let embedded = SHADERS
            .iter()
            .flat_map(|(_, files)| files.iter())
            .find(|(file, _)| *file == name);
        assert_eq!(
            embedded.map(|(_, text)| *text),
            Some(on_disk.as_str()),
            "{name}.wgsl is not in any module of tessera_kernels::SHADERS"
        );
    }
    assert!(count > 0, "no shaders found");
}
