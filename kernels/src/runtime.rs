//! The GPU runtime: adapter choice, device, pipeline cache, buffer pool and command recording.
//!
//! Kernels record dispatches into one open command encoder; nothing runs until [`Gpu::flush`]
//! or a read-back submits it, so a whole forward pass is one submit.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use crate::dtype::{for_browser, specialize, DType};
use crate::error::{KernelError, Result};
use crate::pool::{
    size_class, GpuBuffer, Pool, PoolStats, PooledTexture, TexturePool, STORAGE_USAGE,
};

/// Optional features Tessera uses when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// Bytes of each uniform arena that holds the params of recorded dispatches.
const ARENA_BYTES: u64 = 64 * 1024;

#[cfg(not(target_arch = "wasm32"))]
const NO_ADAPTER_HINT: &str = "install a Vulkan driver (on Debian/Ubuntu without a GPU: \
    `apt-get install mesa-vulkan-drivers`), or set TESSERA_BACKEND=gl to use OpenGL";
#[cfg(target_arch = "wasm32")]
const NO_ADAPTER_HINT: &str = "this browser offers no WebGPU adapter: use a recent browser \
    with WebGPU enabled (Chrome, Edge, Safari, Firefox), on a page served over https or \
    localhost";

/// Which graphics API to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Vulkan (Linux, Windows, Android; lavapipe on CPU).
    Vulkan,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
    /// OpenGL / GLES through EGL (fallback, no f16 or subgroups).
    Gl,
}

impl Backend {
    fn flags(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(Backend::Vulkan),
            "metal" => Ok(Backend::Metal),
            "dx12" | "d3d12" => Ok(Backend::Dx12),
            "gl" | "gles" | "opengl" => Ok(Backend::Gl),
            _ => Err(()),
        }
    }
}

/// Which family of kernel variants `Auto` picks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelFamily {
    /// By the adapter: CPU drivers get the CPU family, everything else the GPU family.
    #[default]
    Auto,
    /// Storage buffers and workgroup-memory tiles (what GPUs want).
    Gpu,
    /// Operands in textures, subgroup broadcasts, one row per invocation (what CPU drivers want).
    Cpu,
}

/// How to choose the adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// Only this backend; `None` tries Vulkan, Metal and DX12, then falls back to GL.
    pub backend: Option<Backend>,
    /// Only adapters whose name contains this (case-insensitive).
    pub adapter_name: Option<String>,
    /// Kernel variants; `Auto` by the adapter. Forcing the GPU family on a CPU driver runs (and
    /// tests) the GPU code paths there, slowly.
    pub kernels: KernelFamily,
    /// Read each kernel's WGSL files from this folder (named as in `shaders/`) when its module
    /// is first built, instead of the copies compiled in: kernel work iterates on shaders without
    /// rebuilding, and `tessera bench compare` runs two folders side by side.
    pub shader_dir: Option<std::path::PathBuf>,
    /// Bind at most this many bytes of a storage buffer (and make buffers no larger), below
    /// the adapter's limit: runs the paths of adapters with small bindings (WebGPU's default
    /// 128 MiB, mobile GPUs) on any machine. `TESSERA_MAX_BINDING=<bytes>`.
    pub max_binding: Option<u64>,
}

impl GpuOptions {
    /// Options from `TESSERA_BACKEND=vulkan|metal|dx12|gl`, `TESSERA_ADAPTER=<name part>`,
    /// `TESSERA_KERNELS=auto|gpu|cpu` and `TESSERA_SHADER_DIR=<folder>`.
    pub fn from_env() -> Result<Self> {
        let backend = match std::env::var("TESSERA_BACKEND") {
            Ok(v) if !v.is_empty() => Some(v.parse().map_err(|_| KernelError::BadEnv {
                var: "TESSERA_BACKEND",
                value: v.clone(),
                expected: "vulkan, metal, dx12 or gl",
            })?),
            _ => None,
        };
        let adapter_name = std::env::var("TESSERA_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty());
        let kernels = match std::env::var("TESSERA_KERNELS").as_deref() {
            Err(_) | Ok("") | Ok("auto") => KernelFamily::Auto,
            Ok("gpu") => KernelFamily::Gpu,
            Ok("cpu") => KernelFamily::Cpu,
            Ok(v) => {
                return Err(KernelError::BadEnv {
                    var: "TESSERA_KERNELS",
                    value: v.to_string(),
                    expected: "auto, gpu or cpu",
                })
            }
        };
        let shader_dir = std::env::var_os("TESSERA_SHADER_DIR")
            .filter(|d| !d.is_empty())
            .map(Into::into);
        let max_binding = match std::env::var("TESSERA_MAX_BINDING") {
            Ok(v) if !v.is_empty() => Some(v.parse().map_err(|_| KernelError::BadEnv {
                var: "TESSERA_MAX_BINDING",
                value: v.clone(),
                expected: "a number of bytes",
            })?),
            _ => None,
        };
        Ok(GpuOptions {
            backend,
            adapter_name,
            kernels,
            shader_dir,
            max_binding,
        })
    }
}

/// The kind of one binding of a kernel's bind group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `var<storage, read>` buffer.
    Read,
    /// `var<storage, read_write>` buffer.
    ReadWrite,
    /// `texture_storage_2d<rgba32float, read>` (rgba16float in f16 kernels), read with
    /// `textureLoad`. Read-only storage textures rather than sampled ones: CPU drivers
    /// (lavapipe) compile a sampled `textureLoad` into a call that works out mip-level sizes
    /// lane by lane, an image load into a few inline instructions (the texture matmul runs
    /// 1.4× faster for it).
    ReadTexture,
    /// `texture_storage_2d_array<rgba32float, read>` (rgba16float in f16 kernels).
    ReadTextureArray,
    /// `texture_storage_2d_array<rgba32float, write>` (rgba16float in f16 kernels).
    StorageTexture,
    /// The `var<uniform>` params struct passed to [`Gpu::dispatch`].
    Params,
}

/// The bindings of a kernel that reads one buffer and writes another: input at 0, output at 1,
/// params at 2.
pub const IN_OUT_BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Read),
    (1, Binding::ReadWrite),
    (2, Binding::Params),
];

/// A resource bound to a kernel's binding.
#[derive(Clone, Copy)]
pub enum Resource<'a> {
    /// A storage buffer.
    Buffer(&'a GpuBuffer),
    /// A texture view (sampled or storage, by the binding's kind).
    Texture(&'a wgpu::TextureView),
}

impl<'a> From<&'a GpuBuffer> for Resource<'a> {
    fn from(b: &'a GpuBuffer) -> Self {
        Resource::Buffer(b)
    }
}

/// What identifies one compute pipeline: shader, entry point, element type and override
/// constants. Its [`KernelKey::name`] is also the cache key, readable in logs.
#[derive(Clone, Debug)]
pub struct KernelKey {
    /// Shader file name without extension, e.g. `matmul`.
    pub shader: &'static str,
    /// The module's WGSL files in order (`alias T = f32;` form), see [`crate::modules`].
    pub source: &'static [crate::ShaderFile],
    /// Entry point.
    pub entry: &'static str,
    /// Element type the shader is specialised to.
    pub dtype: DType,
    /// Override constants, by name.
    pub constants: Vec<(&'static str, f64)>,
    /// `(binding index, kind)` of every binding in group 0.
    pub bindings: &'static [(u32, Binding)],
}

impl KernelKey {
    /// The readable cache key, e.g. `matmul/main_nt/f32/ACT=0,HAS_BIAS=1`.
    pub fn name(&self) -> String {
        let mut c: Vec<String> = self
            .constants
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        c.sort();
        format!(
            "{}/{}/{}/{}",
            self.shader,
            self.entry,
            self.dtype,
            c.join(",")
        )
    }
}

/// A built pipeline and its bind group layout.
pub struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: &'static [(u32, Binding)],
    /// `shader::entry`, for profiles.
    label: String,
}

/// Wall time spent in one kernel (or, as `(transfers)`, in the copies and uploads recorded
/// between kernels) while profiling ([`Gpu::set_profiling`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `shader::entry`.
    pub kernel: String,
    /// Dispatches.
    pub calls: u64,
    /// Total wall time of submit + run + wait, seconds.
    pub seconds: f64,
}

struct Arena {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Recording {
    encoder: Option<wgpu::CommandEncoder>,
    arenas: Vec<Arena>,
    dispatches: u32,
}

/// A description of the adapter in use.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Adapter name.
    pub name: String,
    /// Backend (Vulkan, Metal, Dx12, Gl).
    pub backend: String,
    /// Device type (DiscreteGpu, IntegratedGpu, Cpu, ...).
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver version / info string.
    pub driver_info: String,
}

/// An open GPU device with everything the kernels need.
pub struct Gpu {
    _instance: wgpu::Instance,
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    pool: Arc<Pool>,
    textures: Arc<TexturePool>,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    modules: Mutex<HashMap<(&'static str, DType), wgpu::ShaderModule>>,
    recording: Mutex<Recording>,
    free_arenas: Mutex<Vec<wgpu::Buffer>>,
    staging: Mutex<Vec<wgpu::Buffer>>,
    gpu_error: Arc<Mutex<Option<String>>>,
    dummy: GpuBuffer,
    dummy_rw: GpuBuffer,
    cpu_kernels: bool,
    shader_dir: Option<std::path::PathBuf>,
    profile: Mutex<Option<HashMap<String, (u64, std::time::Duration)>>>,
}

static SHARED: Mutex<Option<Arc<Gpu>>> = Mutex::new(None);

/// What the blocking calls say in a browser.
#[cfg(target_arch = "wasm32")]
const BROWSER_WAIT: &str = "a browser cannot wait for the GPU: open the device with \
    Gpu::new_async and read results with the _async reads";

/// Runs one of the library's futures (an `_async` method) to its end. Natively it blocks the
/// thread: their reads wait for the GPU inside, so nothing else has to drive them, and every
/// blocking method is its `_async` twin run through here. A browser cannot block: there the
/// future is dropped unstarted and the error names the async entry points.
pub fn wait<T, E: From<KernelError>>(
    future: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, E> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(future)
    }
    #[cfg(target_arch = "wasm32")]
    {
        drop(future);
        Err(KernelError::Gpu(BROWSER_WAIT.into()).into())
    }
}

/// Whether the adapter `info` describes runs on the CPU (lavapipe, llvmpipe, WARP,
/// SwiftShader).
fn runs_on_cpu(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu || info.name.to_lowercase().contains("llvmpipe")
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

async fn adapters(backends: wgpu::Backends) -> (wgpu::Instance, Vec<wgpu::Adapter>) {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let list = instance.enumerate_adapters(backends).await;
    (instance, list)
}

/// The best adapter of `backends` whose name contains `wanted` (lower case).
async fn pick(
    backends: wgpu::Backends,
    wanted: Option<&str>,
) -> Option<(wgpu::Instance, wgpu::Adapter)> {
    let (instance, list) = adapters(backends).await;
    let best = list
        .into_iter()
        .filter(|a| wanted.is_none_or(|w| a.get_info().name.to_lowercase().contains(w)))
        .min_by_key(|a| rank(a.get_info().device_type));
    best.map(|a| (instance, a))
}

/// A one-shot value a wgpu callback hands to an `async` reader.
struct Handoff<T>(Arc<Mutex<(Option<T>, Option<std::task::Waker>)>>);

impl<T> Handoff<T> {
    fn new() -> (Handoff<T>, impl FnOnce(T)) {
        let slot = Arc::new(Mutex::new((None, None::<std::task::Waker>)));
        let sender = slot.clone();
        let send = move |value: T| {
            let mut s = sender.lock().unwrap();
            s.0 = Some(value);
            if let Some(w) = s.1.take() {
                w.wake();
            }
        };
        (Handoff(slot), send)
    }
}

impl<T> std::future::Future for Handoff<T> {
    type Output = T;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let mut s = self.0.lock().unwrap();
        match s.0.take() {
            Some(v) => std::task::Poll::Ready(v),
            None => {
                s.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

impl Gpu {
    /// The process-wide device chosen by [`GpuOptions::from_env`], opened on first use (in
    /// browsers an error, as [`Gpu::new`]).
    pub fn shared() -> Result<Arc<Gpu>> {
        let mut shared = SHARED.lock().unwrap();
        if let Some(gpu) = shared.as_ref() {
            return Ok(gpu.clone());
        }
        let gpu = Arc::new(Gpu::new(&GpuOptions::from_env()?)?);
        *shared = Some(gpu.clone());
        Ok(gpu)
    }

    /// Opens the best adapter the options allow: discrete > integrated > virtual > CPU. In
    /// browsers, which cannot wait, an error: [`Gpu::new_async`] opens one there.
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        wait(Gpu::new_async(options))
    }

    /// [`Gpu::new`] as a future: what a browser (WebGPU, where the adapter and device come
    /// from promises) awaits. Natively the same choice of adapter.
    pub async fn new_async(options: &GpuOptions) -> Result<Gpu> {
        let wanted = options.adapter_name.as_ref().map(|s| s.to_lowercase());
        let wanted = wanted.as_deref();
        let found = match options.backend {
            Some(b) => pick(b.flags(), wanted).await,
            None if cfg!(target_arch = "wasm32") => {
                pick(wgpu::Backends::BROWSER_WEBGPU, wanted).await
            }
            None => match pick(
                wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
                wanted,
            )
            .await
            {
                Some(found) => Some(found),
                None => pick(wgpu::Backends::GL, wanted).await,
            },
        };
        let Some((instance, adapter)) = found else {
            let mut filter = String::new();
            if let Some(b) = options.backend {
                filter += &format!(" for backend {b:?}");
            }
            if let Some(n) = &options.adapter_name {
                filter += &format!(" with a name containing '{n}'");
            }
            return Err(KernelError::NoAdapter {
                filter,
                hint: NO_ADAPTER_HINT.to_string(),
            });
        };
        let info = adapter.get_info();
        let features = adapter.features() & WANTED_FEATURES;
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_binding {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
            // The uniform arena keeps its 64 KiB under caps below it (tests' tiny bindings).
            limits.max_buffer_size = limits.max_buffer_size.min(cap.max(ARENA_BYTES));
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tessera"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| KernelError::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        let gpu_error = Arc::new(Mutex::new(None));
        let sink = gpu_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap();
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let pool = Arc::new(Pool::default());
        let small = |label| {
            pool.account(256, true);
            GpuBuffer::new(
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 256,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                }),
                256,
                pool.clone(),
            )
        };
        let dummy = small("tessera-dummy");
        let dummy_rw = small("tessera-dummy-rw");
        let cpu_kernels = match options.kernels {
            KernelFamily::Auto => runs_on_cpu(&info),
            KernelFamily::Gpu => false,
            KernelFamily::Cpu => true,
        };
        Ok(Gpu {
            cpu_kernels,
            shader_dir: options.shader_dir.clone(),
            profile: Mutex::new(None),
            _instance: instance,
            adapter,
            device,
            queue,
            info,
            features,
            limits,
            pool,
            textures: Arc::default(),
            kernels: Mutex::default(),
            modules: Mutex::default(),
            recording: Mutex::default(),
            free_arenas: Mutex::default(),
            staging: Mutex::default(),
            gpu_error,
            dummy,
            dummy_rw,
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The wgpu adapter.
    pub fn adapter(&self) -> &wgpu::Adapter {
        &self.adapter
    }

    /// The adapter's description as wgpu reports it.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Name, backend, type and driver of the adapter.
    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            device_type: format!("{:?}", self.info.device_type),
            driver: self.info.driver.clone(),
            driver_info: self.info.driver_info.clone(),
        }
    }

    /// Optional features enabled on the device (a subset of SHADER_F16, SUBGROUP, TIMESTAMP_QUERY).
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// The adapter's real limits, which the device was opened with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether f16 storage is available.
    pub fn supports_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether every subgroup has exactly `size` invocations (and subgroups are enabled).
    pub fn has_subgroup_size(&self, size: u32) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size == size
            && self.info.subgroup_max_size == size
    }

    /// Whether this adapter runs on the CPU (lavapipe, llvmpipe, WARP, SwiftShader): its
    /// limits (llvmpipe's cap on loop iterations) apply whatever kernels run.
    pub fn is_cpu(&self) -> bool {
        runs_on_cpu(&self.info)
    }

    /// Whether `Auto` picks the CPU family of kernel variants (textures, subgroup broadcasts,
    /// one row per invocation): on CPU drivers unless [`GpuOptions::kernels`] says otherwise.
    pub fn cpu_kernels(&self) -> bool {
        self.cpu_kernels
    }

    /// Fails with a clear error when `dtype` is not usable on this adapter.
    pub fn check_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if dtype == DType::F16 && !self.supports_f16() {
            return Err(KernelError::MissingFeature {
                op,
                feature: "SHADER_F16",
                adapter: self.info.name.clone(),
            });
        }
        Ok(())
    }

    /// Refuses, on CPU drivers, a kernel whose invocations run more than 60,000 loop
    /// iterations in all: llvmpipe ends an invocation's loops after 65,535, silently.
    /// `limit` says what the iterations count.
    pub fn check_loop_iterations(
        &self,
        op: &'static str,
        limit: &'static str,
        iterations: usize,
    ) -> Result<()> {
        const ALLOWED: u64 = 60_000;
        if self.is_cpu() && iterations as u64 > ALLOWED {
            return Err(KernelError::Limit {
                op,
                limit,
                needed: iterations as u64,
                allowed: ALLOWED,
            });
        }
        Ok(())
    }

    /// The most bytes one buffer binding may hold: the storage binding size, within the
    /// largest buffer.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Fails when one binding of `bytes` exceeds the adapter's storage binding size.
    pub fn check_binding_size(&self, op: &'static str, bytes: u64) -> Result<()> {
        let allowed = self.max_binding();
        if bytes > allowed {
            return Err(KernelError::Limit {
                op,
                limit: "max_storage_buffer_binding_size",
                needed: bytes,
                allowed,
            });
        }
        Ok(())
    }

    /// Buffer pool memory figures.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Starts a new peak-memory measurement.
    pub fn reset_peak(&self) {
        self.pool.reset_peak();
    }

    /// Frees the pool's idle buffers.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    fn new_buffer(&self, bytes: u64, for_queue_write: bool) -> GpuBuffer {
        let capacity = size_class(bytes.max(4).next_multiple_of(4));
        let raw = self
            .pool
            .take(capacity, for_queue_write)
            .unwrap_or_else(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tessera-tensor"),
                    size: capacity,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                })
            });
        GpuBuffer::new(raw, bytes, self.pool.clone())
    }

    /// A buffer of at least `bytes` for a kernel to write (contents undefined).
    pub fn alloc(&self, op: &'static str, bytes: u64) -> Result<GpuBuffer> {
        self.check_binding_size(op, bytes)?;
        Ok(self.new_buffer(bytes, false))
    }

    /// A buffer holding `data` (padded to a multiple of 4 bytes with zeros).
    pub fn upload(&self, op: &'static str, data: &[u8]) -> Result<GpuBuffer> {
        self.check_binding_size(op, data.len() as u64)?;
        let buffer = self.new_buffer(data.len() as u64, true);
        let whole = data.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(buffer.raw(), 0, &data[..whole]);
        }
        if whole < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - whole].copy_from_slice(&data[whole..]);
            self.queue.write_buffer(buffer.raw(), whole as u64, &tail);
        }
        Ok(buffer)
    }

    /// A `width × height × layers` texture of `format` (rgba32float or rgba16float) for kernels
    /// and copies to write and kernels to read (contents undefined).
    pub fn texture(
        &self,
        op: &'static str,
        [width, height, layers]: [u32; 3],
        format: wgpu::TextureFormat,
    ) -> Result<PooledTexture> {
        if layers > self.limits.max_texture_array_layers {
            return Err(KernelError::Limit {
                op,
                limit: "max_texture_array_layers",
                needed: layers as u64,
                allowed: self.limits.max_texture_array_layers as u64,
            });
        }
        let max = self.limits.max_texture_dimension_2d;
        if width.max(height) > max {
            return Err(KernelError::Limit {
                op,
                limit: "max_texture_dimension_2d",
                needed: width.max(height) as u64,
                allowed: max as u64,
            });
        }
        let reused = self
            .textures
            .lock()
            .unwrap()
            .get_mut(&(width, height, layers, format))
            .and_then(Vec::pop);
        let texture = reused.unwrap_or_else(|| {
            self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("tessera-staging-texture"),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: layers,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::STORAGE_BINDING
                    | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        });
        Ok(PooledTexture::new(
            texture,
            self.textures.clone(),
            self.pool.clone(),
        ))
    }

    /// A small buffer to bind where a kernel's optional input is switched off.
    pub fn dummy(&self) -> &GpuBuffer {
        &self.dummy
    }

    /// A small buffer to bind where a kernel's optional output is switched off (a buffer bound
    /// for reading cannot also be bound for writing in one dispatch).
    pub fn dummy_rw(&self) -> &GpuBuffer {
        &self.dummy_rw
    }

    /// A 1×1 texture of `dtype`'s texel format to bind where a kernel's optional texture is
    /// switched off (pooled, so only the first call creates one).
    pub fn dummy_texture(&self, dtype: DType) -> Result<PooledTexture> {
        self.texture("dummy", [1, 1, 1], dtype.texel_format())
    }

    fn module(&self, key: &KernelKey) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap();
        if let Some(m) = modules.get(&(key.shader, key.dtype)) {
            return Ok(m.clone());
        }
        let mut text = String::new();
        for (file, embedded) in key.source {
            match &self.shader_dir {
                Some(dir) => {
                    let path = std::path::Path::new(dir).join(format!("{file}.wgsl"));
                    let read = std::fs::read_to_string(&path).map_err(|e| KernelError::Shader {
                        shader: key.shader.to_string(),
                        reason: format!("cannot read {} (the shader folder): {e}", path.display()),
                    })?;
                    text.push_str(&read);
                }
                None => text.push_str(embedded),
            }
            text.push('\n');
        }
        let mut source = specialize(&text, key.dtype);
        if self.info.backend == wgpu::Backend::BrowserWebGpu {
            source = for_browser(&source);
        }
        let module = self.validated(format!("{}/{}", key.shader, key.dtype), || {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(key.shader),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
        })?;
        modules.insert((key.shader, key.dtype), module.clone());
        Ok(module)
    }

    /// Runs `make` (creating shader modules, layouts, pipelines) and returns a validation error
    /// it raised as [`KernelError::Shader`] of `what`. In browsers, where the error arrives
    /// only as a promise, an error reaches the device's error handler instead and the next
    /// submission or read reports it.
    fn validated<T>(&self, what: String, make: impl FnOnce() -> T) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let made = make();
            match pollster::block_on(scope.pop()) {
                Some(e) => Err(KernelError::Shader {
                    shader: what,
                    reason: e.to_string(),
                }),
                None => Ok(made),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = what;
            Ok(make())
        }
    }

    /// The pipeline for `key`, built on first use and cached.
    pub fn kernel(&self, key: &KernelKey) -> Result<Arc<Kernel>> {
        let name = key.name();
        if let Some(k) = self.kernels.lock().unwrap().get(&name) {
            return Ok(k.clone());
        }
        self.check_dtype(key.shader, key.dtype)?;
        let module = self.module(key)?;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = key
            .bindings
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match kind {
                    Binding::Read | Binding::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: kind == Binding::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::Params => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::ReadTexture => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::ReadOnly,
                        format: key.dtype.texel_format(),
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                    Binding::ReadTextureArray => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::ReadOnly,
                        format: key.dtype.texel_format(),
                        view_dimension: wgpu::TextureViewDimension::D2Array,
                    },
                    Binding::StorageTexture => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: key.dtype.texel_format(),
                        view_dimension: wgpu::TextureViewDimension::D2Array,
                    },
                },
                count: None,
            })
            .collect();
        let (layout, pipeline) = self.validated(name.clone(), || {
            let layout = self
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&name),
                    entries: &entries,
                });
            let pipeline_layout =
                self.device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(&name),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
            let pipeline = self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&name),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(key.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &key.constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                });
            (layout, pipeline)
        })?;
        let kernel = Arc::new(Kernel {
            pipeline,
            layout,
            bindings: key.bindings,
            label: format!("{}::{}", key.shader, key.entry),
        });
        self.kernels.lock().unwrap().insert(name, kernel.clone());
        Ok(kernel)
    }

    /// Records one dispatch of `kernel` over `groups` workgroups, binding `resources` to the
    /// kernel's non-params bindings in order and `params` (a `#[repr(C)]` Pod struct) to its
    /// params uniform.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        resources: &[Resource<'_>],
        params: &[u8],
        groups: [u32; 3],
    ) -> Result<()> {
        assert_eq!(
            resources.len(),
            kernel.bindings.len() - 1,
            "launcher passes one resource per binding besides the params"
        );
        let max = self.limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max) {
            return Err(KernelError::Limit {
                op: "dispatch",
                limit: "max_compute_workgroups_per_dimension",
                needed: g as u64,
                allowed: max as u64,
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let profiling = self.profile.lock().unwrap().is_some();
        if profiling {
            // What was recorded before this kernel (copies, uploads) is timed on its own.
            self.sync_timed("(transfers)")?;
        }
        self.record_dispatch(kernel, resources, params, groups)?;
        if profiling {
            self.sync_timed(&kernel.label)?;
        }
        Ok(())
    }

    /// [`Gpu::sync`], adding its wall time to `label` in the profile.
    fn sync_timed(&self, label: &str) -> Result<()> {
        let start = std::time::Instant::now();
        self.sync()?;
        let elapsed = start.elapsed();
        if let Some(profile) = self.profile.lock().unwrap().as_mut() {
            let entry = profile.entry(label.to_string()).or_default();
            entry.0 += 1;
            entry.1 += elapsed;
        }
        Ok(())
    }

    /// Profiling on: from now on every dispatch is submitted and waited for on its own and its
    /// wall time added to its kernel's ([`Gpu::take_profile`]). Slows everything down by the
    /// lost batching; for finding where a model's time goes. Off: back to batched submits.
    pub fn set_profiling(&self, on: bool) {
        *self.profile.lock().unwrap() = on.then(HashMap::new);
    }

    /// The times gathered since profiling was turned on or last taken, slowest first.
    pub fn take_profile(&self) -> Vec<KernelTime> {
        let mut profile = self.profile.lock().unwrap();
        let Some(times) = profile.as_mut() else {
            return Vec::new();
        };
        let mut out: Vec<KernelTime> = times
            .drain()
            .map(|(kernel, (calls, t))| KernelTime {
                kernel,
                calls,
                seconds: t.as_secs_f64(),
            })
            .collect();
        out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        out
    }

    fn record_dispatch(
        &self,
        kernel: &Kernel,
        resources: &[Resource<'_>],
        params: &[u8],
        groups: [u32; 3],
    ) -> Result<()> {
        let align = self.limits.min_uniform_buffer_offset_alignment as usize;
        let slot = params.len().max(16).next_multiple_of(align);
        let mut rec = self.recording.lock().unwrap();
        let needs_arena = rec
            .arenas
            .last()
            .is_none_or(|a| a.bytes.len() + slot > ARENA_BYTES as usize);
        if needs_arena {
            let buffer = self.free_arenas.lock().unwrap().pop().unwrap_or_else(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tessera-params"),
                    size: ARENA_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
            rec.arenas.push(Arena {
                buffer,
                bytes: Vec::with_capacity(ARENA_BYTES as usize),
            });
        }
        let arena = rec.arenas.last_mut().expect("arena pushed above");
        let offset = arena.bytes.len() as u64;
        arena.bytes.extend_from_slice(params);
        arena.bytes.resize(offset as usize + slot, 0);
        let params_binding = wgpu::BufferBinding {
            buffer: &arena.buffer,
            offset,
            size: NonZeroU64::new(params.len().max(16) as u64),
        };
        let mut next = resources.iter();
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .bindings
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupEntry {
                binding,
                resource: match (kind, next_resource(kind, &mut next)) {
                    (Binding::Params, _) => wgpu::BindingResource::Buffer(params_binding.clone()),
                    (_, Some(Resource::Buffer(b))) => b.raw().as_entire_binding(),
                    (_, Some(Resource::Texture(v))) => wgpu::BindingResource::TextureView(v),
                    (_, None) => unreachable!("resource count checked above"),
                },
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let encoder = rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        rec.dispatches += 1;
        Ok(())
    }

    /// A grid of `workgroup`-wide workgroups covering `total` invocations: along x up to the
    /// adapter's per-dimension limit, then rows along y. Kernels index
    /// `gid.y · (grid x · workgroup) + gid.x`; the second value is that row pitch.
    pub fn grid_1d(&self, total: usize, workgroup: usize) -> ([u32; 3], u32) {
        let groups = total.div_ceil(workgroup).max(1);
        let max = self.limits.max_compute_workgroups_per_dimension as usize;
        let (gx, gy) = if groups <= max {
            (groups, 1)
        } else {
            (max, groups.div_ceil(max))
        };
        ([gx as u32, gy as u32, 1], (gx * workgroup) as u32)
    }

    /// Records a copy of `bytes` bytes between two buffers.
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) {
        let mut rec = self.recording.lock().unwrap();
        let encoder = rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        encoder.copy_buffer_to_buffer(src.raw(), 0, dst.raw(), 0, bytes.next_multiple_of(4));
    }

    /// Records a copy of `layers` layers of `height` rows of `width` texels, rows
    /// `bytes_per_row` bytes apart (a multiple of 256, as wgpu requires) one after another from
    /// byte `offset` of `src`, into the corner of `texture` (which may be wider) from layer
    /// `first_layer` on.
    pub fn copy_to_texture(
        &self,
        src: &GpuBuffer,
        offset: u64,
        bytes_per_row: u32,
        texture: &PooledTexture,
        [width, height, layers]: [u32; 3],
        first_layer: u32,
    ) {
        let mut rec = self.recording.lock().unwrap();
        let encoder = rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: src.raw(),
                layout: wgpu::TexelCopyBufferLayout {
                    offset,
                    bytes_per_row: Some(bytes_per_row),
                    rows_per_image: Some(height),
                },
            },
            wgpu::TexelCopyTextureInfo {
                origin: wgpu::Origin3d {
                    x: 0,
                    y: 0,
                    z: first_layer,
                },
                ..texture.raw().as_image_copy()
            },
            wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: layers,
            },
        );
    }

    /// Dispatches recorded since the last submit.
    pub fn pending_dispatches(&self) -> u32 {
        self.recording.lock().unwrap().dispatches
    }

    fn take_error(&self) -> Result<()> {
        match self.gpu_error.lock().unwrap().take() {
            Some(e) => Err(KernelError::Gpu(e)),
            None => Ok(()),
        }
    }

    fn submit_recording(
        &self,
        extra: Option<wgpu::CommandBuffer>,
    ) -> Result<wgpu::SubmissionIndex> {
        // The lock is held until the submit: another thread must not submit later-recorded
        // work (say, the read-back of a result) ahead of this encoder.
        let mut rec = self.recording.lock().unwrap();
        let encoder = rec.encoder.take();
        let arenas = std::mem::take(&mut rec.arenas);
        rec.dispatches = 0;
        for arena in &arenas {
            self.queue.write_buffer(&arena.buffer, 0, &arena.bytes);
        }
        let mut buffers: Vec<wgpu::CommandBuffer> =
            encoder.map(|e| e.finish()).into_iter().collect();
        buffers.extend(extra);
        let index = self.queue.submit(buffers);
        self.pool.submitted();
        drop(rec);
        self.free_arenas
            .lock()
            .unwrap()
            .extend(arenas.into_iter().map(|a| a.buffer));
        self.take_error()?;
        Ok(index)
    }

    /// Submits everything recorded so far (returns without waiting).
    pub fn flush(&self) -> Result<()> {
        self.submit_recording(None).map(|_| ())
    }

    /// Submits everything recorded so far and waits until the GPU has finished it.
    pub fn sync(&self) -> Result<()> {
        let index = self.submit_recording(None)?;
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| KernelError::Gpu(e.to_string()))?;
        self.take_error()
    }

    /// [`Gpu::read`] of the first `count` 32-bit words of `buffer` (indices, bit patterns).
    pub fn read_u32(&self, buffer: &GpuBuffer, count: usize) -> Result<Vec<u32>> {
        wait(self.read_u32_async(buffer, count))
    }

    /// [`Gpu::read_u32`] as a future, which a browser awaits.
    pub async fn read_u32_async(&self, buffer: &GpuBuffer, count: usize) -> Result<Vec<u32>> {
        let bytes = self.read_async(buffer, (count * 4) as u64).await?;
        Ok(bytes
            .chunks_exact(4)
            .take(count)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Submits the recorded work and reads back the first `bytes` bytes of `buffer`. In
    /// browsers, which cannot wait, an error: [`Gpu::read_async`] reads there.
    pub fn read(&self, buffer: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        wait(self.read_async(buffer, bytes))
    }

    /// [`Gpu::read`] as a future, which a browser awaits (natively it waits for the GPU
    /// before it returns).
    pub async fn read_async(&self, buffer: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        let padded = bytes.max(4).next_multiple_of(4);
        let staging = {
            let mut pool = self.staging.lock().unwrap();
            match pool.iter().position(|b| b.size() >= padded) {
                Some(i) => pool.swap_remove(i),
                None => self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tessera-staging"),
                    size: padded.next_power_of_two(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            }
        };
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(buffer.raw(), 0, &staging, 0, padded);
        let index = self.submit_recording(Some(encoder.finish()))?;
        let slice = staging.slice(0..padded);
        let (mapped, send) = Handoff::new();
        slice.map_async(wgpu::MapMode::Read, send);
        // Natively the callback runs inside the wait; in a browser when the promise settles.
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| KernelError::Gpu(e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        mapped.await.map_err(|e| KernelError::Gpu(e.to_string()))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| KernelError::Gpu(e.to_string()))?[..bytes as usize]
            .to_vec();
        staging.unmap();
        self.staging.lock().unwrap().push(staging);
        self.take_error()?;
        Ok(out)
    }
}

fn next_resource<'a>(
    kind: Binding,
    it: &mut std::slice::Iter<'_, Resource<'a>>,
) -> Option<Resource<'a>> {
    if kind == Binding::Params {
        None
    } else {
        it.next().copied()
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} on {:?})", self.info.name, self.info.backend)
    }
}
