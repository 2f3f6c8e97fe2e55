//! Checkpoint weights by Hugging Face key: `model.safetensors` or a sharded
//! `model.safetensors.index.json`, memory-mapped, converted to the compute dtype on upload.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use tessera_kernels::{DType, Gpu};
use tessera_tensor::Tensor;

use crate::error::{NnError, Result};

/// Name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// A checkpoint's file names (single file, index) in the order they are looked for:
/// transformers', diffusers', then the Hub's half-precision variants of both.
const CHECKPOINT_FILES: [[&str; 2]; 4] = [
    [SINGLE_FILE, INDEX_FILE],
    [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
    ],
    [
        "model.fp16.safetensors",
        "model.safetensors.index.fp16.json",
    ],
    [
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.safetensors.index.fp16.json",
    ],
];

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// A safetensors file's bytes: mapped from disk, or handed over in memory.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, Bytes)>,
    tensors: HashMap<String, Entry>,
}

enum Source {
    Files(Checkpoint),
    Random,
}

/// The weights of one checkpoint seen under a key prefix, as candle's `VarBuilder`:
/// `w.pp("encoder").pp("layers").pp(3).get("fc1.weight", &[ffn, hidden])` reads
/// `encoder.layers.3.fc1.weight`. Cloning is cheap.
#[derive(Clone)]
pub struct Weights {
    source: Arc<Source>,
    gpu: Arc<Gpu>,
    dtype: DType,
    prefix: String,
}

#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|source| NnError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the map is read-only and private to this process; like every memory-mapped
    // loader, it assumes the checkpoint file is not modified while the model is loaded.
    unsafe { Mmap::map(&file) }.map_err(|source| NnError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Checkpoint {
    fn open(dir: &Path) -> Result<Self> {
        // The first index or single file of the names, in their order.
        let found = CHECKPOINT_FILES.iter().find_map(|&[single, index]| {
            if dir.join(index).is_file() {
                Some((index, true))
            } else if dir.join(single).is_file() {
                Some((single, false))
            } else {
                None
            }
        });
        let names: Vec<String> = if let Some((index, true)) = found {
            let index: Index = crate::config::read_json(&dir.join(index), "safetensors index")?;
            let names: BTreeSet<String> = index.weight_map.into_values().collect();
            names.into_iter().collect()
        } else if let Some((single, false)) = found {
            vec![single.to_string()]
        } else {
            let detail = if dir.join("pytorch_model.bin").is_file() {
                "only safetensors checkpoints load; this folder has pytorch_model.bin \
                 (download the model's model.safetensors, or convert with transformers' \
                 save_pretrained(safe_serialization=True))"
            } else {
                "no model.safetensors or model.safetensors.index.json: point --model at a \
                 Hugging Face model folder"
            };
            return Err(NnError::Folder {
                dir: dir.to_path_buf(),
                detail: detail.into(),
            });
        };
        let mut checkpoint = Checkpoint::empty(dir.to_path_buf());
        for name in names {
            if name.contains('/') || name.contains('\\') || name.contains("..") {
                return Err(NnError::Folder {
                    dir: dir.to_path_buf(),
                    detail: format!("the index names a shard outside the folder: {name}"),
                });
            }
            let path = dir.join(&name);
            let map = map_file(&path)?;
            checkpoint.add(path, Bytes::Mapped(map))?;
        }
        Ok(checkpoint)
    }

    /// No files yet; `dir` names the checkpoint in messages.
    fn empty(dir: PathBuf) -> Self {
        Checkpoint {
            dir,
            files: Vec::new(),
            tensors: HashMap::new(),
        }
    }

    /// Indexes the tensors of one safetensors file.
    fn add(&mut self, path: PathBuf, bytes: Bytes) -> Result<()> {
        let st = SafeTensors::deserialize(&bytes).map_err(|e| NnError::Safetensors {
            path: path.clone(),
            detail: format!("corrupt or truncated safetensors file ({e})"),
        })?;
        let base = bytes.as_ptr() as usize;
        for (key, view) in st.tensors() {
            let start = view.data().as_ptr() as usize - base;
            self.tensors.insert(
                key,
                Entry {
                    file: self.files.len(),
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: start..start + view.data().len(),
                },
            );
        }
        self.files.push((path, bytes));
        Ok(())
    }

    fn entry(&self, key: &str) -> Result<&Entry> {
        self.tensors.get(key).ok_or_else(|| NnError::MissingWeight {
            key: key.to_string(),
            dir: self.dir.clone(),
        })
    }
}

/// Little-endian values of one float dtype widened to f32.
fn widen(path: &Path, key: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => {
            return Err(NnError::Safetensors {
                path: path.to_path_buf(),
                detail: format!(
                    "weight `{key}` is {other:?}; weights must be F32, F16, BF16 or F64"
                ),
            })
        }
    })
}

/// Deterministic small values for a key (benchmarks with random weights).
fn random_values(key: &str, numel: usize) -> Vec<f32> {
    let mut state = key.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (0..numel)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

impl Weights {
    /// The checkpoint in model folder `dir`, uploaded as `dtype` (f16 needs SHADER_F16).
    pub fn open(gpu: &Arc<Gpu>, dir: &Path, dtype: DType) -> Result<Self> {
        gpu.check_dtype("load", dtype)?;
        Ok(Weights {
            source: Arc::new(Source::Files(Checkpoint::open(dir)?)),
            gpu: gpu.clone(),
            dtype,
            prefix: String::new(),
        })
    }

    /// A checkpoint already in memory: safetensors files as (name, bytes) — what a browser
    /// fetched, or what an application embeds. Names only label messages.
    pub fn from_bytes(gpu: &Arc<Gpu>, files: Vec<(String, Vec<u8>)>, dtype: DType) -> Result<Self> {
        gpu.check_dtype("load", dtype)?;
        let mut checkpoint = Checkpoint::empty(PathBuf::from("(in memory)"));
        for (name, bytes) in files {
            checkpoint.add(PathBuf::from(name), Bytes::Owned(bytes))?;
        }
        Ok(Weights {
            source: Arc::new(Source::Files(checkpoint)),
            gpu: gpu.clone(),
            dtype,
            prefix: String::new(),
        })
    }

    /// Small deterministic pseudo-random values of whatever shape is asked for: a model of a
    /// real-size config without a checkpoint, for benchmarks.
    pub fn random(gpu: &Arc<Gpu>, dtype: DType) -> Result<Self> {
        gpu.check_dtype("load", dtype)?;
        Ok(Weights {
            source: Arc::new(Source::Random),
            gpu: gpu.clone(),
            dtype,
            prefix: String::new(),
        })
    }

    /// The weights under `prefix.name.`.
    pub fn pp(&self, name: impl Display) -> Weights {
        Weights {
            prefix: format!("{}{name}.", self.prefix),
            ..self.clone()
        }
    }

    /// The full key of `name` under this prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether the checkpoint has `name` under this prefix (always true for random weights).
    pub fn contains(&self, name: &str) -> bool {
        match &*self.source {
            Source::Files(c) => c.tensors.contains_key(&self.key(name)),
            Source::Random => true,
        }
    }

    /// The first of `prefixes` (each empty or ending in `.`) under which `probe` exists.
    pub fn find_prefix(&self, prefixes: &[&str], probe: &str) -> Option<Weights> {
        prefixes.iter().find_map(|p| {
            let w = Weights {
                prefix: format!("{}{p}", self.prefix),
                ..self.clone()
            };
            w.contains(probe).then_some(w)
        })
    }

    /// The compute dtype weights are uploaded as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The model folder (none for random weights).
    pub fn dir(&self) -> Option<&Path> {
        match &*self.source {
            Source::Files(c) => Some(&c.dir),
            Source::Random => None,
        }
    }

    fn checked<'a>(&self, c: &'a Checkpoint, key: &str, shape: &[usize]) -> Result<&'a Entry> {
        let entry = c.entry(key)?;
        if entry.shape != shape {
            return Err(NnError::WeightShape {
                key: key.to_string(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        Ok(entry)
    }

    /// The weight `name` as f32 values on the host, checked to have `shape` (`&[]` for a
    /// scalar such as CLIP's `logit_scale`).
    pub fn get_host(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let key = self.key(name);
        match &*self.source {
            Source::Files(c) => {
                let entry = self.checked(c, &key, shape)?;
                let (path, map) = &c.files[entry.file];
                widen(path, &key, entry.dtype, &map[entry.bytes.clone()])
            }
            Source::Random => Ok(random_values(&key, shape.iter().product())),
        }
    }

    /// The weight `name` on the GPU in the compute dtype, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let key = self.key(name);
        if let Source::Files(c) = &*self.source {
            let entry = self.checked(c, &key, shape)?;
            if entry.dtype == Dtype::F16 && self.dtype == DType::F16 {
                let (_, map) = &c.files[entry.file];
                let buffer = self.gpu.upload("load", &map[entry.bytes.clone()])?;
                return Ok(Tensor::from_buffer(&self.gpu, buffer, shape, DType::F16));
            }
        }
        let values = self.get_host(name, shape)?;
        Ok(Tensor::from_slice(&self.gpu, &values, shape, self.dtype)?)
    }

    /// [`Weights::get`] when the checkpoint has the weight, else `None`.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}
