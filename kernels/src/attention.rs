//! Launcher and CPU reference for `shaders/attention.wgsl`: fused scaled-dot-product attention
//! with online softmax, strided Q/K/V views, causal, key-length and additive-bias masks.

use bytemuck::{Pod, Zeroable};

use crate::copy::{copy_strided, StridedView};
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pack::{pack_rows, PackLayout, PackView};
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey, Resource};

/// Largest head dimension the kernel holds per invocation.
pub const MAX_HEAD_DIM: usize = 128;
/// Queries per workgroup of the subgroup kernel.
const SUBGROUP_QUERIES: usize = 128;
/// Invocations per workgroup of the tiled kernel (queries × splits).
const TILED_GROUP: usize = 256;
/// Workgroups the tiled kernel aims for on GPUs: two per SM of a large one.
const TILED_TARGET_GROUPS: usize = 256;

/// Invocations per query of the tiled kernel: the fewest (from 4, doubling up to 256) that
/// make [`TILED_TARGET_GROUPS`] workgroups, or that leave no workgroup with more query slots
/// than there are queries. Measured on an H100 against one invocation per query (64 per
/// workgroup): 1×6×1500×64 3.3 → 2.0 ms, 1×12×197×64 0.47 → 0.21 ms (then 1.1 and 0.17 ms
/// with the query and output in registers).
fn tiled_splits(batch: usize, heads: usize, q_len: usize) -> usize {
    let mut splits = 4;
    while splits < TILED_GROUP
        && (q_len.div_ceil(TILED_GROUP / splits) * heads * batch < TILED_TARGET_GROUPS
            || TILED_GROUP / splits > q_len)
    {
        splits *= 2;
    }
    splits
}

/// Where a `[batch, heads, seq, head_dim]`-indexed operand lies in its buffer: element
/// `(b, h, s, d)` is at `offset + b·batch + h·head + s·seq + d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadView {
    /// Element offset of (0, 0, 0, 0).
    pub offset: usize,
    /// Stride between batch entries.
    pub batch: usize,
    /// Stride between heads.
    pub head: usize,
    /// Stride between positions.
    pub seq: usize,
}

impl HeadView {
    /// A contiguous `[B, S, H, D]` tensor.
    pub fn bshd(seq: usize, heads: usize, head_dim: usize) -> Self {
        HeadView {
            offset: 0,
            batch: seq * heads * head_dim,
            head: head_dim,
            seq: heads * head_dim,
        }
    }

    /// A contiguous `[B, H, S, D]` tensor.
    pub fn bhsd(seq: usize, heads: usize, head_dim: usize) -> Self {
        HeadView {
            offset: 0,
            batch: seq * heads * head_dim,
            head: seq * head_dim,
            seq: head_dim,
        }
    }

    fn at(&self, b: usize, h: usize, s: usize) -> usize {
        self.offset + b * self.batch + h * self.head + s * self.seq
    }

    /// Whether the offset and every stride are multiples of `n` elements.
    fn aligned(&self, n: usize) -> bool {
        [self.offset, self.batch, self.head, self.seq]
            .iter()
            .all(|v| v % n == 0)
    }

    fn packed(&self) -> [u32; 4] {
        [
            self.batch as u32,
            self.head as u32,
            self.seq as u32,
            self.offset as u32,
        ]
    }
}

/// Which kernel computes an attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionVariant {
    /// Chosen from the adapter and the shape.
    #[default]
    Auto,
    /// K and V tiles through workgroup memory (GPUs; every adapter).
    Tiled,
    /// K and V in textures, shared by subgroup broadcasts; needs subgroups of exactly 8
    /// (CPU drivers such as lavapipe, where buffer and workgroup reads go lane by lane).
    TextureSubgroup,
}

/// The shape and masking of one attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Batch entries.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Queries per batch entry and head.
    pub q_len: usize,
    /// Keys (and values) per batch entry and head.
    pub k_len: usize,
    /// Dimension of each head, at most [`MAX_HEAD_DIM`].
    pub head_dim: usize,
    /// Factor on q·k, usually 1/√head_dim.
    pub scale: f32,
    /// Query i sees key j only when j + q_len ≤ i + k_len.
    pub causal: bool,
    /// Storage type.
    pub dtype: DType,
    /// Kernel choice.
    pub variant: AttentionVariant,
}

/// The additive bias: element (b, h, i, j) at `offset + b·batch + h·head + i·seq + j`
/// (stride 0 broadcasts).
pub type BiasView = HeadView;

/// The operands of an attention call.
pub struct AttentionArgs<'a> {
    /// Queries.
    pub q: (&'a GpuBuffer, HeadView),
    /// Keys.
    pub k: (&'a GpuBuffer, HeadView),
    /// Values.
    pub v: (&'a GpuBuffer, HeadView),
    /// Additive bias on the scores.
    pub bias: Option<(&'a GpuBuffer, BiasView)>,
    /// Keys visible to each batch entry (padding mask), `batch` values.
    pub key_lens: Option<&'a [u32]>,
    /// `[batch, q_len, heads, head_dim]`, written.
    pub out: &'a GpuBuffer,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    q_stride: [u32; 4],
    k_stride: [u32; 4],
    v_stride: [u32; 4],
    bias_stride: [u32; 4],
    heads: u32,
    q_len: u32,
    k_len: u32,
    scale: f32,
    key_start: u32,
    key_stop: u32,
    _pad: [u32; 2],
}

fn shape_error(detail: String) -> KernelError {
    KernelError::Shape {
        op: "attention",
        detail,
    }
}

fn check_view(
    what: &str,
    buf: &GpuBuffer,
    view: &HeadView,
    spec: &AttentionSpec,
    seq: usize,
    row: usize,
) -> Result<()> {
    let last = view.at(spec.batch - 1, spec.heads - 1, seq - 1) + row - 1;
    if ((last + 1) * spec.dtype.size()) as u64 > buf.len_bytes() {
        return Err(shape_error(format!(
            "{what} view {view:?} reaches past its buffer of {} bytes",
            buf.len_bytes()
        )));
    }
    Ok(())
}

/// Records one fused attention.
pub fn attention(gpu: &Gpu, spec: &AttentionSpec, args: &AttentionArgs<'_>) -> Result<()> {
    let AttentionSpec {
        batch,
        heads,
        q_len,
        k_len,
        head_dim,
        ..
    } = *spec;
    if batch == 0 || heads == 0 || q_len == 0 || k_len == 0 || head_dim == 0 {
        return Err(shape_error(format!(
            "every size must be at least 1: {spec:?}"
        )));
    }
    if head_dim > MAX_HEAD_DIM || head_dim % 4 != 0 {
        return Err(shape_error(format!(
            "head_dim {head_dim} is not supported: it must be a multiple of 4, at most {MAX_HEAD_DIM}"
        )));
    }
    gpu.check_dtype("attention", spec.dtype)?;
    check_view("q", args.q.0, &args.q.1, spec, q_len, head_dim)?;
    check_view("k", args.k.0, &args.k.1, spec, k_len, head_dim)?;
    check_view("v", args.v.0, &args.v.1, spec, k_len, head_dim)?;
    if let Some((buf, view)) = &args.bias {
        check_view("bias", buf, view, spec, q_len, k_len)?;
    }
    if ((batch * q_len * heads * head_dim * spec.dtype.size()) as u64) > args.out.len_bytes() {
        return Err(shape_error("output buffer too small".into()));
    }
    let key_lens = match args.key_lens {
        Some(lens) if lens.len() != batch => {
            return Err(shape_error(format!(
                "{} key lengths for a batch of {batch}",
                lens.len()
            )))
        }
        Some(lens) => Some(gpu.upload("attention", bytemuck::cast_slice(lens))?),
        None => None,
    };
    let variant = choose_variant(gpu, spec);
    let textured = variant == AttentionVariant::TextureSubgroup;
    if textured && !gpu.has_subgroup_size(8) {
        return Err(KernelError::MissingFeature {
            op: "attention",
            feature: "SUBGROUP with subgroups of 8",
            adapter: gpu.summary().name,
        });
    }
    // K and V as array textures: layer b·heads + h, row = key, four dims per texel.
    let pack = |buf: &GpuBuffer, view: &HeadView| {
        pack_rows(
            gpu,
            spec.dtype,
            buf,
            &PackView {
                rows: k_len,
                cols: head_dim,
                row_stride: view.seq,
                col_stride: 1,
                offset: view.offset,
                layers: batch * heads,
                layer_div: heads,
                outer_stride: view.batch,
                inner_stride: view.head,
            },
            PackLayout::Rows,
        )
    };
    let textures = if textured {
        Some((pack(args.k.0, &args.k.1)?, pack(args.v.0, &args.v.1)?))
    } else {
        None
    };
    // The buffer kernel reads K and V four elements at a time; views that are not 4-aligned
    // are copied into [B, H, S, D] first.
    let aligned_copy = |(buf, view): (&GpuBuffer, HeadView)| -> Result<Option<GpuBuffer>> {
        if textured || view.aligned(4) {
            return Ok(None);
        }
        let shape = [batch, heads, k_len, head_dim];
        let copy = gpu.alloc(
            "attention",
            (shape.iter().product::<usize>() * spec.dtype.size()) as u64,
        )?;
        let src = StridedView {
            shape: shape.to_vec(),
            strides: vec![view.batch, view.head, view.seq, 1],
            offset: view.offset,
        };
        copy_strided(
            gpu,
            spec.dtype,
            buf,
            &src,
            &copy,
            &StridedView::contiguous(&shape),
        )?;
        Ok(Some(copy))
    };
    let contiguous = HeadView::bhsd(k_len, heads, head_dim);
    let k_copy = aligned_copy(args.k)?;
    let v_copy = aligned_copy(args.v)?;
    let k_arg = k_copy.as_ref().map_or(args.k, |c| (c, contiguous));
    let v_arg = v_copy.as_ref().map_or(args.v, |c| (c, contiguous));
    let chunk = keys_per_dispatch(gpu, variant, head_dim).min(k_len);
    let chunks = k_len.div_ceil(chunk);
    let state = if chunks > 1 {
        let bytes = batch * q_len * heads * (head_dim / 4 + 1) * 16;
        Some(gpu.alloc("attention", bytes as u64)?)
    } else {
        None
    };
    let dummy = gpu.dummy();
    let splits = tiled_splits(batch, heads, q_len);
    for c in 0..chunks {
        let (first, last) = (c == 0, c + 1 == chunks);
        let kernel = gpu.kernel(&KernelKey {
            shader: if textured {
                "attention_subgroup"
            } else {
                "attention"
            },
            source: if textured {
                crate::modules::ATTENTION_SUBGROUP
            } else {
                crate::modules::ATTENTION
            },
            entry: if textured {
                "attention_subgroup"
            } else {
                "attention"
            },
            dtype: spec.dtype,
            constants: [
                ("HEAD_DIM", head_dim as f64),
                ("CAUSAL", spec.causal as u32 as f64),
                ("HAS_KEY_LEN", key_lens.is_some() as u32 as f64),
                ("HAS_BIAS", args.bias.is_some() as u32 as f64),
                ("FIRST", first as u32 as f64),
                ("LAST", last as u32 as f64),
            ]
            .into_iter()
            .chain((!textured).then_some(("SPLITS", splits as f64)))
            .collect(),
            bindings: if textured {
                TEXTURE_BINDINGS
            } else {
                BUFFER_BINDINGS
            },
        })?;
        let params = Params {
            q_stride: args.q.1.packed(),
            k_stride: k_arg.1.packed(),
            v_stride: v_arg.1.packed(),
            bias_stride: args.bias.map_or([0; 4], |(_, v)| v.packed()),
            heads: heads as u32,
            q_len: q_len as u32,
            k_len: k_len as u32,
            scale: spec.scale,
            key_start: (c * chunk) as u32,
            key_stop: ((c + 1) * chunk).min(k_len) as u32,
            _pad: [0; 2],
        };
        let mut resources: Vec<Resource<'_>> = vec![args.q.0.into()];
        if !textured {
            resources.extend([Resource::Buffer(k_arg.0), Resource::Buffer(v_arg.0)]);
        }
        resources.extend([
            Resource::Buffer(args.bias.map_or(dummy, |(b, _)| b)),
            Resource::Buffer(key_lens.as_ref().unwrap_or(dummy)),
            Resource::Buffer(if last { args.out } else { gpu.dummy_rw() }),
            Resource::Buffer(state.as_ref().unwrap_or(gpu.dummy_rw())),
        ]);
        if let Some((tk, tv)) = &textures {
            resources.extend([
                Resource::Texture(tk.array_view()),
                Resource::Texture(tv.array_view()),
            ]);
        }
        gpu.dispatch(
            &kernel,
            &resources,
            bytemuck::bytes_of(&params),
            [
                q_len.div_ceil(if textured {
                    SUBGROUP_QUERIES
                } else {
                    TILED_GROUP / splits
                }) as u32,
                heads as u32,
                batch as u32,
            ],
        )?;
    }
    Ok(())
}

const BUFFER_BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Read),
    (1, Binding::Read),
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::Read),
    (5, Binding::ReadWrite),
    (6, Binding::ReadWrite),
    (7, Binding::Params),
];

const TEXTURE_BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Read),
    (3, Binding::Read),
    (4, Binding::Read),
    (5, Binding::ReadWrite),
    (6, Binding::ReadWrite),
    (7, Binding::Params),
    (8, Binding::ReadTextureArray),
    (9, Binding::ReadTextureArray),
];

/// The variant `Auto` resolves to: textures and subgroup broadcasts on CPU drivers with
/// subgroups of 8 when K and V fit the texture limits, workgroup-memory tiles otherwise.
pub fn choose_variant(gpu: &Gpu, spec: &AttentionSpec) -> AttentionVariant {
    let l = gpu.limits();
    let fits = spec.k_len <= l.max_texture_dimension_2d as usize
        && spec.batch * spec.heads <= l.max_texture_array_layers as usize;
    match spec.variant {
        AttentionVariant::Auto if gpu.cpu_kernels() && gpu.has_subgroup_size(8) && fits => {
            AttentionVariant::TextureSubgroup
        }
        AttentionVariant::Auto => AttentionVariant::Tiled,
        v => v,
    }
}

/// Keys one dispatch may cover. llvmpipe ends an invocation's loops after 65535 iterations in
/// total, so on CPU drivers long sequences are split (about 34k iterations per dispatch: a
/// 16-key tile of the tiled kernel costs two passes of head_dim/4 per key plus bookkeeping).
/// An 8-key step of the subgroup kernel is one iteration since its head-dim steps are
/// unrolled; it keeps the bound it had with two loops of head_dim/4 per step (8000 keys per
/// dispatch at head_dim 64), far below the limit and long enough that the split costs
/// nothing. GPUs take all keys.
pub fn keys_per_dispatch(gpu: &Gpu, variant: AttentionVariant, head_dim: usize) -> usize {
    if !gpu.is_cpu() {
        return usize::MAX;
    }
    let d4 = head_dim / 4;
    match variant {
        AttentionVariant::TextureSubgroup => (34_000 / (2 * d4 + 2)).max(1) * 8,
        _ => (34_000 / (32 * d4 + 64)).max(1) * 16,
    }
}

/// CPU reference of [`attention`]: softmax(scale·QKᵀ + bias + mask)·V in f64, the output as
/// `[batch, q_len, heads, head_dim]`; rows that see no key are zeros.
pub fn attention_cpu(
    spec: &AttentionSpec,
    q: (&[f32], HeadView),
    k: (&[f32], HeadView),
    v: (&[f32], HeadView),
    bias: Option<(&[f32], BiasView)>,
    key_lens: Option<&[u32]>,
) -> Vec<f32> {
    let AttentionSpec {
        batch,
        heads,
        q_len,
        k_len,
        head_dim: dim,
        ..
    } = *spec;
    let mut out = vec![0f32; batch * q_len * heads * dim];
    for b in 0..batch {
        let visible = key_lens.map_or(k_len, |l| (l[b] as usize).min(k_len));
        for h in 0..heads {
            for i in 0..q_len {
                let mut scores = Vec::new();
                for j in 0..visible {
                    if spec.causal && j + q_len > i + k_len {
                        continue;
                    }
                    let mut s = 0f64;
                    for d in 0..dim {
                        s += q.0[q.1.at(b, h, i) + d] as f64 * k.0[k.1.at(b, h, j) + d] as f64;
                    }
                    s *= spec.scale as f64;
                    if let Some((bias, view)) = bias {
                        s += bias[view.at(b, h, i) + j] as f64;
                    }
                    scores.push((j, s));
                }
                if scores.is_empty() {
                    continue;
                }
                let m = scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
                let total: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
                let o = ((b * q_len + i) * heads + h) * dim;
                let mut row = vec![0f64; dim];
                for &(j, s) in &scores {
                    let w = (s - m).exp() / total;
                    for (d, r) in row.iter_mut().enumerate() {
                        *r += w * v.0[v.1.at(b, h, j) + d] as f64;
                    }
                }
                for (d, r) in row.into_iter().enumerate() {
                    out[o + d] = r as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split counts `tests/all/attention.rs` (`split_counts`) runs, and the real shapes.
    #[test]
    fn splits_fill_the_target_or_the_queries() {
        assert_eq!(tiled_splits(16, 16, 64), 4);
        assert_eq!(tiled_splits(16, 16, 32), 8);
        assert_eq!(tiled_splits(16, 16, 16), 16);
        // Whisper (1500 queries, 6 and 8 heads), ViT-B/16 (197, 12), CLIP text (8 × 77, 8).
        assert_eq!(tiled_splits(1, 6, 1500), 8);
        assert_eq!(tiled_splits(1, 8, 1500), 8);
        assert_eq!(tiled_splits(1, 12, 197), 32);
        assert_eq!(tiled_splits(8, 8, 77), 16);
        // One query: every invocation of a workgroup on its keys.
        assert_eq!(tiled_splits(1, 1, 1), 256);
    }
}
