//! Launcher and CPU reference for `shaders/matmul.wgsl`:
//! `C[b] = act(alpha * A[b] · op(B[b]) + bias) + residual[b]`.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pack::{pack_rows, PackLayout, PackView};
use crate::pool::{GpuBuffer, PooledTexture};
use crate::runtime::{Binding, Gpu, KernelKey, Resource};

/// a, b, bias, residual, c, params.
const BUFFER_BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Read),
    (1, Binding::Read),
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::ReadWrite),
    (5, Binding::Params),
];
/// bias, residual, c, params, A texture, op(B) texture, C texture.
const TEXTURE_BINDINGS: &[(u32, Binding)] = &[
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::ReadWrite),
    (5, Binding::Params),
    (6, Binding::ReadTexture),
    (7, Binding::ReadTexture),
    (8, Binding::StorageTexture),
];

/// Elementwise activation applied in a kernel's epilogue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// max(x, 0).
    Relu,
    /// x·Φ(x) with the exact (erf) normal CDF, PyTorch's default `gelu`.
    GeluErf,
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// x·σ(1.702·x), CLIP's `quick_gelu`.
    QuickGelu,
    /// x·σ(x), also called swish.
    Silu,
    /// tanh(x), as in ViT's pooler.
    Tanh,
}

impl Activation {
    /// The value of the shaders' `ACT` override constant (activation.wgsl).
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::GeluErf => 2,
            Activation::GeluTanh => 3,
            Activation::QuickGelu => 4,
            Activation::Silu => 5,
            Activation::Tanh => 6,
        }
    }

    /// The activation applied to one value, in f64 (the CPU reference).
    pub fn apply(self, x: f64) -> f64 {
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            }
            Activation::QuickGelu => x * sigmoid(1.702 * x),
            Activation::Silu => x * sigmoid(x),
            Activation::Tanh => x.tanh(),
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = String;
    /// Parses the names Hugging Face configs use (`hidden_act`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "none" | "linear" | "identity" => Activation::None,
            "relu" => Activation::Relu,
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            other => {
                return Err(format!(
                    "unsupported activation '{other}': supported are relu, gelu, gelu_new, \
                     gelu_pytorch_tanh, quick_gelu, silu, tanh"
                ))
            }
        })
    }
}

/// erf in f64 by its Maclaurin series near 0 and a continued fraction of erfc beyond; accurate
/// to ~1e-15, far below any kernel tolerance.
pub fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Lentz's continued fraction for erfc(z) = exp(-z²)/√π · 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))).
        let z = x.abs();
        let mut f = z;
        for n in (1..60).rev() {
            f = z + (n as f64 / 2.0) / f;
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc).copysign(x)
    }
}

/// Which kernel computes a matmul.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatmulVariant {
    /// Chosen from the adapter and the shape.
    #[default]
    Auto,
    /// Register-blocked, no workgroup memory (CPU drivers).
    Register,
    /// Workgroup-memory tiles of 64×64 (GPUs).
    Tiled,
    /// Workgroup-memory tiles of 128×128, 8×8 outputs per invocation (GPUs, products with
    /// enough tiles to fill them).
    TiledLarge,
    /// Operands packed into textures, then register-blocked (CPU drivers, where texture reads
    /// are vector gathers and storage reads are not).
    Texture,
    /// [`MatmulVariant::Texture`] with A shared through subgroup broadcasts; needs subgroups of
    /// exactly 8 invocations (lavapipe).
    TextureSubgroup,
    /// One row of A (M = 1).
    Gemv,
}

/// Shape and epilogue of one (batched) matmul.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    /// Number of independent products.
    pub batch: usize,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// B is `[N, K]` (read transposed, Linear layout) rather than `[K, N]`.
    pub trans_b: bool,
    /// One B for every batch entry.
    pub broadcast_b: bool,
    /// One residual `[M, N]` for every batch entry.
    pub broadcast_residual: bool,
    /// Factor applied to A·B before bias and activation.
    pub alpha: f32,
    /// Epilogue activation.
    pub activation: Activation,
    /// Storage type of all operands.
    pub dtype: DType,
    /// Kernel choice.
    pub variant: MatmulVariant,
}

impl MatmulSpec {
    /// `[m, k] · [k, n]` with no epilogue, f32, batch 1.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        MatmulSpec {
            batch: 1,
            m,
            n,
            k,
            trans_b: false,
            broadcast_b: false,
            broadcast_residual: false,
            alpha: 1.0,
            activation: Activation::None,
            dtype: DType::F32,
            variant: MatmulVariant::Auto,
        }
    }

    /// Floating-point operations of the product (2·batch·M·N·K).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }

    fn b_len(&self) -> usize {
        let per = self.n * self.k;
        if self.broadcast_b {
            per
        } else {
            per * self.batch
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_base: u32,
    a_stride: u32,
    b_stride: u32,
    c_stride: u32,
    alpha: f32,
    r_stride: u32,
    _pad: [u32; 3],
}

/// A `[rows, cols]` matrix in the layout the texture kernels read: four consecutive columns
/// per texel, zero past the last column ([`DType::texel_format`]), rows as [`PackLayout`] says.
/// A weight `[N, K]` packed once at load ([`PackedRows::pack`], [`PackLayout::Quads`]) is
/// op(B) of every later call, so CPU drivers do not pack it again each time; an activation a
/// matmul writes in this form ([`MatmulOut::Packed`], [`PackLayout::Rows`]) is the next
/// matmul's A with no buffer copy of it ever existing.
pub struct PackedRows {
    texture: PooledTexture,
    rows: usize,
    cols: usize,
    dtype: DType,
    layout: PackLayout,
}

impl PackedRows {
    /// Packs `src`, holding `[rows, cols]` row-major `dtype` elements, in `layout`: A is read
    /// in `Rows`, B in either (`Quads` is faster to read, slower to pack).
    pub fn pack(
        gpu: &Gpu,
        dtype: DType,
        src: &GpuBuffer,
        rows: usize,
        cols: usize,
        layout: PackLayout,
    ) -> Result<Self> {
        src.check_holds("matmul", "packed matrix", rows * cols, dtype)?;
        Self::check_fits(gpu, rows, cols, layout)?;
        let view = PackView::matrix(rows, cols, cols, 1, 0);
        let texture = pack_rows(gpu, dtype, src, &view, layout)?;
        Ok(PackedRows {
            texture,
            rows,
            cols,
            dtype,
            layout,
        })
    }

    /// An unwritten `[rows, cols]` matrix in [`PackLayout::Rows`], for a matmul to write
    /// ([`MatmulOut::Packed`]) and a later one to read as A.
    pub fn empty(gpu: &Gpu, dtype: DType, rows: usize, cols: usize) -> Result<Self> {
        let layout = PackLayout::Rows;
        Self::check_fits(gpu, rows, cols, layout)?;
        let size = layout.size(gpu, dtype, rows, cols, 1);
        Ok(PackedRows {
            texture: gpu.texture("matmul", size, dtype.texel_format())?,
            rows,
            cols,
            dtype,
            layout,
        })
    }

    /// Whether a `[rows, cols]` matrix in `layout` fits one texture on `gpu`.
    pub fn fits(gpu: &Gpu, rows: usize, cols: usize, layout: PackLayout) -> bool {
        Self::check_fits(gpu, rows, cols, layout).is_ok()
    }

    fn check_fits(gpu: &Gpu, rows: usize, cols: usize, layout: PackLayout) -> Result<()> {
        let max = gpu.limits().max_texture_dimension_2d as usize;
        let [width, height] = layout.extent(rows, cols);
        if rows == 0 || cols == 0 || width > max || height > max {
            return Err(KernelError::Shape {
                op: "matmul",
                detail: format!(
                    "a [{rows}, {cols}] matrix ({layout:?}) does not fit one texture of \
                     {max}×{max} texels"
                ),
            });
        }
        Ok(())
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// How the rows sit in the texture.
    pub fn layout(&self) -> PackLayout {
        self.layout
    }

    /// The texture, for kernels that write the packed form directly.
    pub(crate) fn texture(&self) -> &PooledTexture {
        &self.texture
    }

    /// Element type (the precision the values were rounded to).
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

impl std::fmt::Debug for PackedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedRows([{}, {}], {}, {:?})",
            self.rows, self.cols, self.dtype, self.layout
        )
    }
}

/// Whether matmuls with an `[n, k]` weight run on the texture kernels on `gpu` (CPU drivers),
/// so that packing the weight once at load pays.
pub fn prefers_packed_b(gpu: &Gpu, n: usize, k: usize) -> bool {
    gpu.cpu_kernels() && PackedRows::fits(gpu, n, k, PackLayout::Quads)
}

/// The B operand of a matmul.
#[derive(Clone, Copy, Debug)]
pub enum MatmulB<'a> {
    /// `[batch or 1, N, K]` if `trans_b`, else `[batch or 1, K, N]`.
    Buffer(&'a GpuBuffer),
    /// Packed `[N, K]`: `trans_b` and shared by the batch; runs the texture kernels.
    Packed(&'a PackedRows),
}

/// The A operand of a matmul.
#[derive(Clone, Copy, Debug)]
pub enum MatmulA<'a> {
    /// `[batch, M, K]`.
    Buffer(&'a GpuBuffer),
    /// Packed `[M, K]` (batch 1) in [`PackLayout::Rows`]; runs the texture kernels.
    Packed(&'a PackedRows),
}

/// Where a matmul writes C.
#[derive(Clone, Copy, Debug)]
pub enum MatmulOut<'a> {
    /// `[batch, M, N]`.
    Buffer(&'a GpuBuffer),
    /// Packed `[M, N]` (batch 1) in [`PackLayout::Rows`], for a later matmul's A; runs the
    /// texture kernels.
    Packed(&'a PackedRows),
}

/// The operands of a matmul, holding `spec.dtype` elements.
pub struct MatmulArgs<'a> {
    /// A.
    pub a: MatmulA<'a>,
    /// B.
    pub b: MatmulB<'a>,
    /// `[N]`, optional.
    pub bias: Option<&'a GpuBuffer>,
    /// `[batch, M, N]` (`[M, N]` with `broadcast_residual`), added after the activation.
    pub residual: Option<&'a GpuBuffer>,
    /// C, written.
    pub out: MatmulOut<'a>,
}

fn to_u32(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| KernelError::Shape {
        op: "matmul",
        detail: format!("{what} = {v} exceeds the 32-bit index range"),
    })
}

/// The variant `Auto` resolves to on `gpu` for `spec`.
///
/// On CPU drivers every read of a storage buffer is a per-invocation loop while texture reads
/// are vector gathers, so the texture kernels win there even for M = 1 (measured on lavapipe:
/// 1×4096×4096 in 42 ms against 90 ms for the GEMV). On GPUs the tiled kernels and the GEMV read
/// buffers directly: large tiles for products with many of them, else 64×64.
pub fn choose_variant(gpu: &Gpu, spec: &MatmulSpec) -> MatmulVariant {
    match spec.variant {
        MatmulVariant::Auto if gpu.cpu_kernels() && fits_textures(gpu, spec) => {
            if gpu.has_subgroup_size(8) {
                MatmulVariant::TextureSubgroup
            } else {
                MatmulVariant::Texture
            }
        }
        MatmulVariant::Auto if spec.m == 1 => MatmulVariant::Gemv,
        MatmulVariant::Auto if gpu.cpu_kernels() => MatmulVariant::Register,
        MatmulVariant::Auto if large_tiles_fill(spec) => MatmulVariant::TiledLarge,
        MatmulVariant::Auto => MatmulVariant::Tiled,
        v => v,
    }
}

/// Whether a product has enough 128×128 tiles to keep a large GPU busy with
/// [`MatmulVariant::TiledLarge`].
fn large_tiles_fill(spec: &MatmulSpec) -> bool {
    spec.batch * spec.m.div_ceil(128) * spec.n.div_ceil(128) >= LARGE_TILES_MIN
}

/// Whether the texture kernels take `spec`: op(B) in one texture (in rows, or in quads of
/// rows where N is past the texture's height); A too, or a single product whose rows are split
/// into texture-sized slabs.
fn fits_textures(gpu: &Gpu, spec: &MatmulSpec) -> bool {
    let max = gpu.limits().max_texture_dimension_2d as usize;
    let b_fits = [PackLayout::Rows, PackLayout::Quads]
        .into_iter()
        .any(|layout| PackedRows::fits(gpu, spec.n, spec.k, layout));
    b_fits && (spec.m <= max || spec.batch == 1)
}

/// Tiles of 128×128 from which `Auto` picks [`MatmulVariant::TiledLarge`] on GPUs. Measured on
/// an H100 (132 SMs): 2048² (256 tiles) 1.05 → 0.86 ms and 4096² 7.7 → 6.2 ms with the large
/// tiles; 1576×3072 (312) the same either way; 1500×1536 (144) and 1024² (64) slower.
const LARGE_TILES_MIN: usize = 256;

/// Rows of A from which a B packed per call is interleaved into [`PackLayout::Quads`]: on
/// lavapipe interleaving costs about as much as the faster reads save at ~600 rows (a copy
/// into [`PackLayout::Rows`] 0.3 ms, the interleaving pass 4.5 ms per million elements; the
/// kernel ~12% faster on quads).
const QUADS_FROM_ROWS: usize = 512;

/// Products of at most this many rows run the texture kernels with row blocks along the grid's
/// x (see `matmul`): four row blocks or fewer.
const ROWS_ALONG_X_MAX: usize = 256;

/// The layout a B packed for this call is read in: quads from [`QUADS_FROM_ROWS`] rows of A
/// on, or where N rows do not fit one texture.
fn per_call_b_layout(gpu: &Gpu, spec: &MatmulSpec) -> PackLayout {
    let rows_fit = PackedRows::fits(gpu, spec.n, spec.k, PackLayout::Rows);
    if (spec.m >= QUADS_FROM_ROWS || !rows_fit)
        && PackedRows::fits(gpu, spec.n, spec.k, PackLayout::Quads)
    {
        PackLayout::Quads
    } else {
        PackLayout::Rows
    }
}

/// Records the matmul described by `spec` on `args`.
pub fn matmul(gpu: &Gpu, spec: &MatmulSpec, args: &MatmulArgs<'_>) -> Result<()> {
    let MatmulSpec { batch, m, n, k, .. } = *spec;
    if batch == 0 || m == 0 || n == 0 || k == 0 {
        return Err(KernelError::Shape {
            op: "matmul",
            detail: format!(
                "every dimension must be at least 1, got batch={batch} m={m} n={n} k={k}"
            ),
        });
    }
    gpu.check_dtype("matmul", spec.dtype)?;
    let check_packed = |what: &str, p: &PackedRows, shape: (usize, usize)| {
        if p.shape() != shape || p.dtype != spec.dtype || batch > 1 || p.layout != PackLayout::Rows
        {
            return Err(KernelError::Shape {
                op: "matmul",
                detail: format!(
                    "packed {what} is {} {:?} in {:?} but the product needs {} {:?} in Rows, \
                     in one batch (got {batch})",
                    p.dtype,
                    p.shape(),
                    p.layout,
                    spec.dtype,
                    shape
                ),
            });
        }
        Ok(())
    };
    match args.a {
        MatmulA::Buffer(a) => a.check_holds("matmul", "A", batch * m * k, spec.dtype)?,
        MatmulA::Packed(p) => check_packed("A", p, (m, k))?,
    }
    match args.b {
        MatmulB::Buffer(b) => b.check_holds("matmul", "B", spec.b_len(), spec.dtype)?,
        MatmulB::Packed(p) => {
            if p.shape() != (n, k) || p.dtype != spec.dtype || !spec.trans_b {
                return Err(KernelError::Shape {
                    op: "matmul",
                    detail: format!(
                        "packed B is {} {:?} but the product needs {} [{n}, {k}] in Linear layout",
                        p.dtype,
                        p.shape(),
                        spec.dtype
                    ),
                });
            }
            if !spec.broadcast_b && batch > 1 {
                return Err(KernelError::Shape {
                    op: "matmul",
                    detail: "a packed B is shared by the batch".into(),
                });
            }
        }
    }
    match args.out {
        MatmulOut::Buffer(c) => c.check_holds("matmul", "C", batch * m * n, spec.dtype)?,
        MatmulOut::Packed(p) => check_packed("C", p, (m, n))?,
    }
    if let Some(bias) = args.bias {
        bias.check_holds("matmul", "bias", n, spec.dtype)?;
    }
    if let Some(r) = args.residual {
        let batches = if spec.broadcast_residual { 1 } else { batch };
        r.check_holds("matmul", "residual", batches * m * n, spec.dtype)?;
    }
    to_u32("batch·M·K", batch * m * k)?;
    to_u32("batch·N·K", batch * n * k)?;
    to_u32("batch·M·N", batch * m * n)?;
    let packed_a = matches!(args.a, MatmulA::Packed(_));
    let packed_out = matches!(args.out, MatmulOut::Packed(_));
    let packed = packed_a || packed_out || matches!(args.b, MatmulB::Packed(_));
    let variant = match choose_variant(gpu, spec) {
        v @ (MatmulVariant::Texture | MatmulVariant::TextureSubgroup) => v,
        _ if packed => {
            if !fits_textures(gpu, spec) {
                return Err(KernelError::Shape {
                    op: "matmul",
                    detail: format!("{m} rows in {batch} batches do not fit the texture kernels"),
                });
            }
            if gpu.has_subgroup_size(8) {
                MatmulVariant::TextureSubgroup
            } else {
                MatmulVariant::Texture
            }
        }
        v => v,
    };
    if variant == MatmulVariant::TextureSubgroup && !gpu.has_subgroup_size(8) {
        return Err(KernelError::MissingFeature {
            op: "matmul",
            feature: "SUBGROUP with subgroups of 8",
            adapter: gpu.summary().name,
        });
    }
    let textured = matches!(
        variant,
        MatmulVariant::Texture | MatmulVariant::TextureSubgroup
    );
    if variant == MatmulVariant::Gemv && m != 1 {
        return Err(KernelError::Shape {
            op: "matmul",
            detail: format!("the GEMV kernel needs M = 1, got M = {m}"),
        });
    }
    // One row on the texture kernels: every invocation owns 8 columns; no row blocks (see
    // `mm_tex_row`).
    let row_entry = textured && m == 1;
    let (entry, groups_x, groups_y) = match variant {
        MatmulVariant::Register => ("mm_reg", n.div_ceil(32), m.div_ceil(32)),
        MatmulVariant::Tiled => ("mm_tiled", n.div_ceil(64), m.div_ceil(64)),
        MatmulVariant::TiledLarge => ("mm_tiled_large", n.div_ceil(128), m.div_ceil(128)),
        _ if row_entry => ("mm_tex_row", n.div_ceil(256), 1),
        MatmulVariant::Texture | MatmulVariant::TextureSubgroup => {
            let entry = if variant == MatmulVariant::Texture {
                "mm_tex"
            } else {
                "mm_tex_subgroup"
            };
            // Column blocks, row blocks (per slab, below).
            (entry, n.div_ceil(32), m.div_ceil(64))
        }
        _ if spec.trans_b
            && n.div_ceil(8) <= gpu.limits().max_compute_workgroups_per_dimension as usize =>
        {
            ("gemv_t", n.div_ceil(8), 1)
        }
        _ => ("gemv", n.div_ceil(256), 1),
    };
    let subgroup = variant == MatmulVariant::TextureSubgroup && !row_entry;
    // The texture kernels' grid order. CPU drivers (llvmpipe) hand each thread one contiguous
    // run of workgroup indices, x fastest. With column blocks along x, consecutive workgroups
    // share their 64 rows of A (kept in cache), but with few row blocks the one holding the
    // ragged last rows has fewer subgroups at work and its thread finishes early (M = 197: one
    // thread 128 rows, the other 80). Row blocks along x give every thread every row block.
    // Measured on lavapipe: M = 77 15 → 24 GFLOP/s and M = 197 27 → 33 with row blocks along
    // x; M = 1024 and 1500 ~10% faster with column blocks along x.
    let rows_along_x = m <= ROWS_ALONG_X_MAX;
    let b_layout = match args.b {
        MatmulB::Packed(p) => p.layout,
        MatmulB::Buffer(_) => per_call_b_layout(gpu, spec),
    };
    let key = KernelKey {
        shader: if subgroup {
            "matmul_subgroup"
        } else {
            "matmul"
        },
        source: if subgroup {
            crate::modules::MATMUL_SUBGROUP
        } else {
            crate::modules::MATMUL
        },
        entry,
        dtype: spec.dtype,
        constants: vec![
            ("TRANS_B", spec.trans_b as u32 as f64),
            ("HAS_BIAS", args.bias.is_some() as u32 as f64),
            ("HAS_RESIDUAL", args.residual.is_some() as u32 as f64),
            ("ACT", spec.activation.code() as f64),
            ("OUT_TEXTURE", packed_out as u32 as f64),
            ("B_GROUP", b_layout.group() as f64),
            ("ROWS_ALONG_X", rows_along_x as u32 as f64),
        ],
        bindings: if textured {
            TEXTURE_BINDINGS
        } else {
            BUFFER_BINDINGS
        },
    };
    let kernel = gpu.kernel(&key)?;
    let dummy = gpu.dummy();
    let bias = args.bias.unwrap_or(dummy);
    let residual = args.residual.unwrap_or(dummy);
    let grid = [to_u32("grid x", groups_x)?, to_u32("grid y", groups_y)?];
    let params = |batch_base: usize| Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch_base: batch_base as u32,
        a_stride: (m * k) as u32,
        b_stride: if spec.broadcast_b { 0 } else { (n * k) as u32 },
        c_stride: (m * n) as u32,
        alpha: spec.alpha,
        r_stride: if spec.broadcast_residual {
            0
        } else {
            (m * n) as u32
        },
        _pad: [0; 3],
    };
    if textured {
        // op(B) is packed as N rows of K: rows of B itself when transposed, columns otherwise.
        let b_view = |bi: usize| {
            PackView::matrix(
                n,
                k,
                if spec.trans_b { k } else { 1 },
                if spec.trans_b { 1 } else { n },
                if spec.broadcast_b { 0 } else { bi * n * k },
            )
        };
        let pack_b =
            |b: &GpuBuffer, bi: usize| pack_rows(gpu, spec.dtype, b, &b_view(bi), b_layout);
        let mut repacked = None;
        let tex_b: &PooledTexture = match args.b {
            MatmulB::Packed(p) => &p.texture,
            MatmulB::Buffer(b) => repacked.insert(pack_b(b, 0)?),
        };
        let mut tex_b = tex_b;
        // Rows beyond one texture's height go in slabs, each dispatched as its own "batch
        // entry" (slab i writes C rows from i·slab on, through c_stride = slab·N). Packed
        // operands are single textures, checked above to fit.
        let max = gpu.limits().max_texture_dimension_2d as usize / 64 * 64;
        let slab = if batch == 1 && m > max && !packed_a && !packed_out {
            max
        } else {
            m
        };
        let (c, dummy_tex);
        let out_tex = match args.out {
            MatmulOut::Buffer(buffer) => {
                c = buffer;
                dummy_tex = gpu.dummy_texture(spec.dtype)?;
                &dummy_tex
            }
            MatmulOut::Packed(p) => {
                c = gpu.dummy_rw();
                &p.texture
            }
        };
        for bi in 0..batch {
            if let (MatmulB::Buffer(b), true) = (args.b, bi > 0 && !spec.broadcast_b) {
                tex_b = repacked.insert(pack_b(b, bi)?);
            }
            for (si, r0) in (0..m).step_by(slab).enumerate() {
                let rows = slab.min(m - r0);
                let packed_here;
                let tex_a = match args.a {
                    MatmulA::Packed(p) => &p.texture,
                    MatmulA::Buffer(a) => {
                        let a_view = PackView::matrix(rows, k, k, 1, bi * m * k + r0 * k);
                        packed_here = pack_rows(gpu, spec.dtype, a, &a_view, PackLayout::Rows)?;
                        &packed_here
                    }
                };
                let mut p = params(bi + si);
                if slab < m {
                    p.m = rows as u32;
                    p.c_stride = (slab * n) as u32;
                    p.r_stride = (slab * n) as u32;
                }
                gpu.dispatch(
                    &kernel,
                    &[
                        bias.into(),
                        residual.into(),
                        c.into(),
                        Resource::Texture(tex_a.view()),
                        Resource::Texture(tex_b.view()),
                        Resource::Texture(out_tex.array_view()),
                    ],
                    bytemuck::bytes_of(&p),
                    if row_entry {
                        [grid[0], 1, 1]
                    } else if rows_along_x {
                        [to_u32("grid x", rows.div_ceil(64))?, grid[0], 1]
                    } else {
                        [grid[0], to_u32("grid y", rows.div_ceil(64))?, 1]
                    },
                )?;
            }
        }
        return Ok(());
    }
    let (MatmulA::Buffer(a), MatmulB::Buffer(b), MatmulOut::Buffer(c)) = (args.a, args.b, args.out)
    else {
        unreachable!("packed operands always take the texture kernels");
    };
    let buffers = [a.into(), b.into(), bias.into(), residual.into(), c.into()];
    let max_z = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let mut base = 0;
    while base < batch {
        let chunk = (batch - base).min(max_z);
        gpu.dispatch(
            &kernel,
            &buffers,
            bytemuck::bytes_of(&params(base)),
            [grid[0], grid[1], chunk as u32],
        )?;
        base += chunk;
    }
    Ok(())
}

/// CPU reference of [`matmul`] in f64 accumulation over f32 inputs.
pub fn matmul_cpu(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let MatmulSpec { batch, m, n, k, .. } = *spec;
    let mut c = vec![0f32; batch * m * n];
    for bi in 0..batch {
        let a_off = bi * m * k;
        let b_off = if spec.broadcast_b { 0 } else { bi * n * k };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    let bv = if spec.trans_b {
                        b[b_off + j * k + kk]
                    } else {
                        b[b_off + kk * n + j]
                    };
                    s += a[a_off + i * k + kk] as f64 * bv as f64;
                }
                let mut v = spec.alpha as f64 * s;
                if let Some(bias) = bias {
                    v += bias[j] as f64;
                }
                v = spec.activation.apply(v);
                let idx = bi * m * n + i * n + j;
                if let Some(r) = residual {
                    let rb = if spec.broadcast_residual { 0 } else { bi };
                    v += r[rb * m * n + i * n + j] as f64;
                }
                c[idx] = v as f32;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn cpu_reference_multiplies() {
        let mut spec = MatmulSpec::new(2, 2, 3);
        let a = [1., 2., 3., 4., 5., 6.];
        let b = [1., 0., 0., 1., 1., 1.];
        assert_eq!(
            matmul_cpu(&spec, &a, &b, None, None),
            vec![4., 5., 10., 11.]
        );
        spec.trans_b = true;
        let bt = [1., 0., 1., 0., 1., 1.];
        assert_eq!(
            matmul_cpu(&spec, &a, &bt, None, None),
            vec![4., 5., 10., 11.]
        );
    }

    #[test]
    fn activation_names_parse() {
        assert_eq!(
            "quick_gelu".parse::<Activation>(),
            Ok(Activation::QuickGelu)
        );
        assert!("mish"
            .parse::<Activation>()
            .unwrap_err()
            .contains("unsupported"));
    }
}
