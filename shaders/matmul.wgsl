// Matrix multiplication with a fused epilogue.
//
//   C[b] = act(alpha * A[b] · op(B[b]) + bias) + residual[b]
//
// A is [batch, M, K] row-major. B is [batch, N, K] when TRANS_B (PyTorch's Linear weight
// layout, read transposed) and [batch, K, N] otherwise; b_stride = 0 broadcasts one B over the
// batch. bias is [N]; residual and C are [batch, M, N]. Storage is T (f32 or f16), every
// accumulation is f32.
//
// Entry points:
//   mm_reg    register-blocked, no workgroup memory: each invocation owns a 4x4 block of C.
//             Fast where workgroup memory and barriers are slow (lavapipe and other CPU drivers).
//   mm_tiled  64x64 tiles staged through workgroup memory, 256 invocations each computing 4x4.
//             For discrete and integrated GPUs.
//   mm_tiled_large  128x128 tiles, 8x8 per invocation: the same for products with enough
//             tiles to fill a large GPU.
//   mm_tex    register-blocked over operands packed into rgba32float textures (by pack.wgsl),
//             A rows and op(B) columns along x: each invocation owns an 8x4 block of C. Texture
//             reads are vector gathers on CPU drivers, storage reads are not.
//   gemv_t    M = 1 with B as [N, K]: 32 invocations per output, summed in workgroup memory.
//   gemv      M = 1 with B as [K, N] (or N past gemv_t's grid): each invocation owns 4 outputs.
//
// Compiled after activation.wgsl and matmul_epilogue.wgsl, which declare T, Params, the
// overrides, the texture kernels' operand textures and the epilogue.

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;

fn store_block(batch: u32, row0: u32, col0: u32, acc: array<vec4<f32>, 4>) {
    for (var i = 0u; i < 4u; i++) {
        store_row(batch, row0 + i, col0, acc[i]);
    }
}

fn a4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(a[i]), f32(a[i + 1u]), f32(a[i + 2u]), f32(a[i + 3u]));
}

fn b4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(b[i]), f32(b[i + 1u]), f32(b[i + 2u]), f32(b[i + 3u]));
}

// Four B values at one k for the columns whose offsets are in `cols`.
fn b_cols(base: u32, cols: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(f32(b[base + cols.x]), f32(b[base + cols.y]), f32(b[base + cols.z]),
        f32(b[base + cols.w]));
}

@compute @workgroup_size(8, 8, 1)
fn mm_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z + p.batch_base;
    let row0 = (wid.y * 8u + lid.y) * 4u;
    let col0 = (wid.x * 8u + lid.x) * 4u;
    if row0 >= p.m || col0 >= p.n {
        return;
    }
    let k = p.k;
    let a_base = batch * p.a_stride;
    let b_base = batch * p.b_stride;
    // Rows and columns past the edge are clamped onto the last one: their loads stay in
    // bounds and their results are not stored.
    let rows = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u));
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    let ar = vec4<u32>(a_base) + rows * k;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    let k4 = k & ~3u;
    if TRANS_B {
        let bc = vec4<u32>(b_base) + cols * k;
        for (var kk = 0u; kk < k4; kk += 4u) {
            let x0 = a4(ar.x + kk);
            let x1 = a4(ar.y + kk);
            let x2 = a4(ar.z + kk);
            let x3 = a4(ar.w + kk);
            let y0 = b4(bc.x + kk);
            let y1 = b4(bc.y + kk);
            let y2 = b4(bc.z + kk);
            let y3 = b4(bc.w + kk);
            acc0 += vec4<f32>(dot(x0, y0), dot(x0, y1), dot(x0, y2), dot(x0, y3));
            acc1 += vec4<f32>(dot(x1, y0), dot(x1, y1), dot(x1, y2), dot(x1, y3));
            acc2 += vec4<f32>(dot(x2, y0), dot(x2, y1), dot(x2, y2), dot(x2, y3));
            acc3 += vec4<f32>(dot(x3, y0), dot(x3, y1), dot(x3, y2), dot(x3, y3));
        }
        for (var kk = k4; kk < k; kk++) {
            let y = vec4<f32>(f32(b[bc.x + kk]), f32(b[bc.y + kk]), f32(b[bc.z + kk]),
                f32(b[bc.w + kk]));
            acc0 += f32(a[ar.x + kk]) * y;
            acc1 += f32(a[ar.y + kk]) * y;
            acc2 += f32(a[ar.z + kk]) * y;
            acc3 += f32(a[ar.w + kk]) * y;
        }
    } else {
        let n = p.n;
        let co = cols - vec4<u32>(cols.x);
        var brow = b_base + cols.x;
        for (var kk = 0u; kk < k4; kk += 4u) {
            let x0 = a4(ar.x + kk);
            let x1 = a4(ar.y + kk);
            let x2 = a4(ar.z + kk);
            let x3 = a4(ar.w + kk);
            let y0 = b_cols(brow, co);
            let y1 = b_cols(brow + n, co);
            let y2 = b_cols(brow + 2u * n, co);
            let y3 = b_cols(brow + 3u * n, co);
            brow += 4u * n;
            acc0 += x0.x * y0 + x0.y * y1 + x0.z * y2 + x0.w * y3;
            acc1 += x1.x * y0 + x1.y * y1 + x1.z * y2 + x1.w * y3;
            acc2 += x2.x * y0 + x2.y * y1 + x2.z * y2 + x2.w * y3;
            acc3 += x3.x * y0 + x3.y * y1 + x3.z * y2 + x3.w * y3;
        }
        for (var kk = k4; kk < k; kk++) {
            let y = b_cols(brow, co);
            brow += n;
            acc0 += f32(a[ar.x + kk]) * y;
            acc1 += f32(a[ar.y + kk]) * y;
            acc2 += f32(a[ar.z + kk]) * y;
            acc3 += f32(a[ar.w + kk]) * y;
        }
    }
    store_block(batch, row0, col0, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}

@compute @workgroup_size(8, 8, 1)
fn mm_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z + p.batch_base;
    let block = blocks(wid);
    let row0 = (block.x * 8u + lid.y) * 8u;
    let col0 = (block.y * 8u + lid.x) * 4u;
    if row0 >= p.m || col0 >= p.n {
        return;
    }
    // Clamped like mm_reg: edge loads stay in bounds, their results are not stored.
    let last_row = p.m - 1u;
    let r0 = min(row0, last_row);
    let r1 = min(row0 + 1u, last_row);
    let r2 = min(row0 + 2u, last_row);
    let r3 = min(row0 + 3u, last_row);
    let r4 = min(row0 + 4u, last_row);
    let r5 = min(row0 + 5u, last_row);
    let r6 = min(row0 + 6u, last_row);
    let r7 = min(row0 + 7u, last_row);
    // This invocation's four op(B) columns; in quads (B_GROUP 4) their texels at one step of
    // k are one 64-byte line.
    let b0 = b_texel(col0);
    let b1 = b_texel(col0 + 1u);
    let b2 = b_texel(col0 + 2u);
    let b3 = b_texel(col0 + 3u);
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    var acc4 = vec4<f32>();
    var acc5 = vec4<f32>();
    var acc6 = vec4<f32>();
    var acc7 = vec4<f32>();
    let texels = (p.k + 3u) / 4u;
    for (var x = 0u; x < texels; x++) {
        let y0 = load_b(b0, x);
        let y1 = load_b(b1, x);
        let y2 = load_b(b2, x);
        let y3 = load_b(b3, x);
        acc0 += dot4(textureLoad(tex_a, vec2<u32>(x, r0)), y0, y1, y2, y3);
        acc1 += dot4(textureLoad(tex_a, vec2<u32>(x, r1)), y0, y1, y2, y3);
        acc2 += dot4(textureLoad(tex_a, vec2<u32>(x, r2)), y0, y1, y2, y3);
        acc3 += dot4(textureLoad(tex_a, vec2<u32>(x, r3)), y0, y1, y2, y3);
        acc4 += dot4(textureLoad(tex_a, vec2<u32>(x, r4)), y0, y1, y2, y3);
        acc5 += dot4(textureLoad(tex_a, vec2<u32>(x, r5)), y0, y1, y2, y3);
        acc6 += dot4(textureLoad(tex_a, vec2<u32>(x, r6)), y0, y1, y2, y3);
        acc7 += dot4(textureLoad(tex_a, vec2<u32>(x, r7)), y0, y1, y2, y3);
    }
    let b4 = bias4(col0);
    emit_row(batch, row0, col0, acc0, b4);
    emit_row(batch, row0 + 1u, col0, acc1, b4);
    emit_row(batch, row0 + 2u, col0, acc2, b4);
    emit_row(batch, row0 + 3u, col0, acc3, b4);
    emit_row(batch, row0 + 4u, col0, acc4, b4);
    emit_row(batch, row0 + 5u, col0, acc5, b4);
    emit_row(batch, row0 + 6u, col0, acc6, b4);
    emit_row(batch, row0 + 7u, col0, acc7, b4);
}

// One row of C (M = 1: a GEMV) for the texture variants. The block kernels would compute 8 or
// 16 rows of which one is real; here an invocation owns 8 columns of the single row, and A's
// texel at a step of k is the same for every invocation (on CPU drivers, one gather of one
// address). 256 columns per workgroup.
@compute @workgroup_size(8, 4, 1)
fn mm_tex_row(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32) {
    let batch = wid.z + p.batch_base;
    let col0 = (wid.x * 32u + li) * 8u;
    if col0 >= p.n {
        return;
    }
    let b0 = b_texel(col0);
    let b1 = b_texel(col0 + 1u);
    let b2 = b_texel(col0 + 2u);
    let b3 = b_texel(col0 + 3u);
    let b4 = b_texel(col0 + 4u);
    let b5 = b_texel(col0 + 5u);
    let b6 = b_texel(col0 + 6u);
    let b7 = b_texel(col0 + 7u);
    var lo = vec4<f32>();
    var hi = vec4<f32>();
    let texels = (p.k + 3u) / 4u;
    for (var x = 0u; x < texels; x++) {
        let a = textureLoad(tex_a, vec2<u32>(x, 0u));
        lo += dot4(a, load_b(b0, x), load_b(b1, x), load_b(b2, x), load_b(b3, x));
        hi += dot4(a, load_b(b4, x), load_b(b5, x), load_b(b6, x), load_b(b7, x));
    }
    emit_row(batch, 0u, col0, lo, bias4(col0));
    if col0 + 4u < p.n {
        emit_row(batch, 0u, col0 + 4u, hi, bias4(col0 + 4u));
    }
}

// The tiled kernels stage a step of K of both operands in workgroup memory as [k][row / 4]
// vec4s (rows of A, columns of op(B)), so an invocation's four rows or columns at one k are one
// 16-byte load, and read the next step from memory into registers while they compute this one.
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 256>;

// How many of lo..lo+3 are below hi.
fn count4(lo: u32, hi: u32) -> u32 {
    return min(select(0u, hi - lo, lo < hi), 4u);
}

// a[at..at+3] (a4) with the values from `valid` on zeroed (reads past the buffer are clamped
// by the bounds checks WGSL guarantees, and zeroed here).
fn a_k4(at: u32, valid: u32) -> vec4<f32> {
    return select(vec4<f32>(), a4(at), vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(valid));
}

fn b_k4(at: u32, valid: u32) -> vec4<f32> {
    return select(vec4<f32>(), b4(at), vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(valid));
}

// Four consecutive k from k0 of row `row` of A (rows M, row-major [M, K]).
fn stage_a(a_base: u32, row: u32, k0: u32) -> vec4<f32> {
    let valid = select(0u, count4(k0, p.k), row < p.m);
    return a_k4(a_base + min(row, p.m - 1u) * p.k + k0, valid);
}

// TRANS_B: four consecutive k from k0 of row `col` of B ([N, K]). Otherwise: columns
// col..col+3 of row k0 of B ([K, N]).
fn stage_b(b_base: u32, col: u32, k0: u32) -> vec4<f32> {
    if TRANS_B {
        let valid = select(0u, count4(k0, p.k), col < p.n);
        return b_k4(b_base + min(col, p.n - 1u) * p.k + k0, valid);
    }
    let valid = select(0u, count4(col, p.n), k0 < p.k);
    return b_k4(b_base + min(k0, p.k - 1u) * p.n + col, valid);
}

// Writes four k (kq..kq+3) of row or column `r` of a tile as [k][r / 4] (stride vec4s per k).
fn put_a(kq: u32, r: u32, stride: u32, v: vec4<f32>) {
    tile_a[kq * stride + r / 4u][r % 4u] = v.x;
    tile_a[(kq + 1u) * stride + r / 4u][r % 4u] = v.y;
    tile_a[(kq + 2u) * stride + r / 4u][r % 4u] = v.z;
    tile_a[(kq + 3u) * stride + r / 4u][r % 4u] = v.w;
}

fn put_b(kq: u32, r: u32, stride: u32, v: vec4<f32>) {
    tile_b[kq * stride + r / 4u][r % 4u] = v.x;
    tile_b[(kq + 1u) * stride + r / 4u][r % 4u] = v.y;
    tile_b[(kq + 2u) * stride + r / 4u][r % 4u] = v.z;
    tile_b[(kq + 3u) * stride + r / 4u][r % 4u] = v.w;
}

// What one invocation stages of a tile `size` rows and columns wide and `depth` k deep: four k
// (from k) of row `row` of A, and of op(B) four k of B's row `row` (TRANS_B) or four columns
// (from col) of B's row `b_k`.
struct Slot {
    row: u32,
    k: u32,
    b_k: u32,
    col: u32,
}

fn slot(li: u32, size: u32, depth: u32) -> Slot {
    let groups = depth / 4u;
    let quads = size / 4u;
    return Slot(li / groups, (li % groups) * 4u, li / quads, (li % quads) * 4u);
}

struct Staged {
    a: vec4<f32>,
    b: vec4<f32>,
}

// Reads a slot's values for the step of K from k0, of the tile at (tile_row, tile_col).
fn stage(s: Slot, a_base: u32, b_base: u32, tile_row: u32, tile_col: u32, k0: u32) -> Staged {
    let x = stage_a(a_base, tile_row + s.row, k0 + s.k);
    if TRANS_B {
        return Staged(x, stage_b(b_base, tile_col + s.row, k0 + s.k));
    }
    return Staged(x, stage_b(b_base, tile_col + s.col, k0 + s.b_k));
}

// Writes a slot's values into the tiles (size / 4 vec4s per k).
fn put(s: Slot, quads: u32, v: Staged) {
    put_a(s.k, s.row, quads, v.a);
    if TRANS_B {
        put_b(s.k, s.row, quads, v.b);
    } else {
        tile_b[s.b_k * quads + s.col / 4u] = v.b;
    }
}

// mm_tiled: 64x64 tiles of C, 256 invocations each computing 4x4 (rows 4ty.., columns 4tx..),
// K in steps of 16.
@compute @workgroup_size(16, 16, 1)
fn mm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32) {
    let batch = wid.z + p.batch_base;
    let tile_row = wid.y * 64u;
    let tile_col = wid.x * 64u;
    let a_base = batch * p.a_stride;
    let b_base = batch * p.b_stride;
    let s = slot(li, 64u, 16u);
    var next = stage(s, a_base, b_base, tile_row, tile_col, 0u);
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    let tx = lid.x;
    let ty = lid.y;
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        put(s, 16u, next);
        workgroupBarrier();
        if k0 + 16u < p.k {
            next = stage(s, a_base, b_base, tile_row, tile_col, k0 + 16u);
        }
        for (var kk = 0u; kk < 16u; kk++) {
            let x = tile_a[kk * 16u + ty];
            let y = tile_b[kk * 16u + tx];
            acc0 += x.x * y;
            acc1 += x.y * y;
            acc2 += x.z * y;
            acc3 += x.w * y;
        }
        workgroupBarrier();
    }
    let row = tile_row + ty * 4u;
    let col = tile_col + tx * 4u;
    store_row(batch, row, col, acc0);
    store_row(batch, row + 1u, col, acc1);
    store_row(batch, row + 2u, col, acc2);
    store_row(batch, row + 3u, col, acc3);
}

// mm_tiled_large: 128x128 tiles of C, 256 invocations each computing 8x8 (rows 4ty.. and
// 64+4ty.., columns 4tx.. and 64+4tx..), K in steps of 8: for products with enough tiles to
// fill a large GPU, twice the arithmetic per value staged.
@compute @workgroup_size(16, 16, 1)
fn mm_tiled_large(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let batch = wid.z + p.batch_base;
    let tile_row = wid.y * 128u;
    let tile_col = wid.x * 128u;
    let a_base = batch * p.a_stride;
    let b_base = batch * p.b_stride;
    let s = slot(li, 128u, 8u);
    var next = stage(s, a_base, b_base, tile_row, tile_col, 0u);
    var c00 = vec4<f32>();
    var c01 = vec4<f32>();
    var c02 = vec4<f32>();
    var c03 = vec4<f32>();
    var c10 = vec4<f32>();
    var c11 = vec4<f32>();
    var c12 = vec4<f32>();
    var c13 = vec4<f32>();
    var c20 = vec4<f32>();
    var c21 = vec4<f32>();
    var c22 = vec4<f32>();
    var c23 = vec4<f32>();
    var c30 = vec4<f32>();
    var c31 = vec4<f32>();
    var c32 = vec4<f32>();
    var c33 = vec4<f32>();
    let tx = lid.x;
    let ty = lid.y;
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        put(s, 32u, next);
        workgroupBarrier();
        if k0 + 8u < p.k {
            next = stage(s, a_base, b_base, tile_row, tile_col, k0 + 8u);
        }
        for (var kk = 0u; kk < 8u; kk++) {
            // cRC: rows 4ty.. (R = 0, 1) or 64+4ty.. (R = 2, 3) by halves, columns y0 or y1.
            let x0 = tile_a[kk * 32u + ty];
            let x1 = tile_a[kk * 32u + 16u + ty];
            let y0 = tile_b[kk * 32u + tx];
            let y1 = tile_b[kk * 32u + 16u + tx];
            c00 += x0.x * y0;
            c01 += x0.y * y0;
            c02 += x0.z * y0;
            c03 += x0.w * y0;
            c10 += x0.x * y1;
            c11 += x0.y * y1;
            c12 += x0.z * y1;
            c13 += x0.w * y1;
            c20 += x1.x * y0;
            c21 += x1.y * y0;
            c22 += x1.z * y0;
            c23 += x1.w * y0;
            c30 += x1.x * y1;
            c31 += x1.y * y1;
            c32 += x1.z * y1;
            c33 += x1.w * y1;
        }
        workgroupBarrier();
    }
    let r0 = tile_row + ty * 4u;
    let r1 = r0 + 64u;
    let col0 = tile_col + tx * 4u;
    let col1 = col0 + 64u;
    store_row(batch, r0, col0, c00);
    store_row(batch, r0 + 1u, col0, c01);
    store_row(batch, r0 + 2u, col0, c02);
    store_row(batch, r0 + 3u, col0, c03);
    store_row(batch, r0, col1, c10);
    store_row(batch, r0 + 1u, col1, c11);
    store_row(batch, r0 + 2u, col1, c12);
    store_row(batch, r0 + 3u, col1, c13);
    store_row(batch, r1, col0, c20);
    store_row(batch, r1 + 1u, col0, c21);
    store_row(batch, r1 + 2u, col0, c22);
    store_row(batch, r1 + 3u, col0, c23);
    store_row(batch, r1, col1, c30);
    store_row(batch, r1 + 1u, col1, c31);
    store_row(batch, r1 + 2u, col1, c32);
    store_row(batch, r1 + 3u, col1, c33);
}

// gemv_t: M = 1 with TRANS_B, 8 columns per workgroup, 32 invocations per column, each
// summing every 32nd group of four k, then a tree sum over the 32 in workgroup memory. Every
// B row is read by consecutive invocations in 512-byte runs, and N = 4096 makes 512 workgroups.
var<workgroup> gemv_part: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn gemv_t(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let batch = wid.z + p.batch_base;
    let lane = li % 32u;
    let col = wid.x * 8u + li / 32u;
    let k = p.k;
    let a_base = batch * p.a_stride;
    let b_row = batch * p.b_stride + min(col, p.n - 1u) * k;
    var acc = 0.0;
    for (var k0 = lane * 4u; k0 < k; k0 += 128u) {
        let valid = count4(k0, k);
        acc += dot(a_k4(a_base + k0, valid), b_k4(b_row + k0, valid));
    }
    gemv_part[li] = acc;
    workgroupBarrier();
    for (var s = 16u; s > 0u; s >>= 1u) {
        if lane < s {
            gemv_part[li] += gemv_part[li + s];
        }
        workgroupBarrier();
    }
    if li < 2u {
        let first = li * 128u;
        let v = vec4<f32>(gemv_part[first], gemv_part[first + 32u], gemv_part[first + 64u],
            gemv_part[first + 96u]);
        store_row(batch, 0u, wid.x * 8u + li * 4u, v);
    }
}

@compute @workgroup_size(64, 1, 1)
fn gemv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let batch = wid.z + p.batch_base;
    let col0 = gid.x * 4u;
    if col0 >= p.n {
        return;
    }
    let k = p.k;
    let a_base = batch * p.a_stride;
    let b_base = batch * p.b_stride;
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    var acc = vec4<f32>();
    let k4 = k & ~3u;
    if TRANS_B {
        let bc = vec4<u32>(b_base) + cols * k;
        for (var kk = 0u; kk < k4; kk += 4u) {
            let x = a4(a_base + kk);
            acc += vec4<f32>(dot(x, b4(bc.x + kk)), dot(x, b4(bc.y + kk)), dot(x, b4(bc.z + kk)),
                dot(x, b4(bc.w + kk)));
        }
        for (var kk = k4; kk < k; kk++) {
            acc += f32(a[a_base + kk]) * vec4<f32>(f32(b[bc.x + kk]), f32(b[bc.y + kk]),
                f32(b[bc.z + kk]), f32(b[bc.w + kk]));
        }
    } else {
        let co = cols - vec4<u32>(cols.x);
        var brow = b_base + cols.x;
        for (var kk = 0u; kk < k; kk++) {
            acc += f32(a[a_base + kk]) * b_cols(brow, co);
            brow += p.n;
        }
    }
    store_row(batch, 0u, col0, acc);
}
