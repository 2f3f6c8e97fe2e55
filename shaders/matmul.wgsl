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
//   mm_tex    register-blocked over operands packed into rgba32float textures (by pack.wgsl),
//             A rows and op(B) columns along x: each invocation owns an 8x4 block of C. Texture
//             reads are vector gathers on CPU drivers, storage reads are not.
//   gemv      M = 1: each invocation owns 4 outputs.
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

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
// Staged as [k][row] and [k][col] so the inner loop reads 4 consecutive values.
var<workgroup> tile_a: array<f32, 1024>;
var<workgroup> tile_b: array<f32, 1024>;

@compute @workgroup_size(16, 16, 1)
fn mm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32) {
    let batch = wid.z + p.batch_base;
    let tile_row = wid.y * TILE;
    let tile_col = wid.x * TILE;
    let a_base = batch * p.a_stride;
    let b_base = batch * p.b_stride;
    let m = p.m;
    let n = p.n;
    let k = p.k;
    var acc = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < k; k0 += TILE_K) {
        // 256 invocations load 64x16 values of A and of B, 4 each; out-of-range values are 0.
        for (var s = 0u; s < 4u; s++) {
            // e -> (r, kk) with kk fastest, so consecutive invocations read consecutive k.
            let e = li + s * 256u;
            let r = e / TILE_K;
            let kk = e % TILE_K;
            let gk = k0 + kk;
            var va = 0.0;
            if tile_row + r < m && gk < k {
                va = f32(a[a_base + (tile_row + r) * k + gk]);
            }
            tile_a[kk * TILE + r] = va;
        }
        if TRANS_B {
            for (var s = 0u; s < 4u; s++) {
                let e = li + s * 256u;
                let r = e / TILE_K;
                let kk = e % TILE_K;
                var vb = 0.0;
                if tile_col + r < n && k0 + kk < k {
                    vb = f32(b[b_base + (tile_col + r) * k + k0 + kk]);
                }
                tile_b[kk * TILE + r] = vb;
            }
        } else {
            for (var s = 0u; s < 4u; s++) {
                // e -> (kk, col) with col fastest: consecutive invocations read along a row of B.
                let e = li + s * 256u;
                let kk = e / TILE;
                let col = e % TILE;
                var vb = 0.0;
                if tile_col + col < n && k0 + kk < k {
                    vb = f32(b[b_base + (k0 + kk) * n + tile_col + col]);
                }
                tile_b[kk * TILE + col] = vb;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let x = vec4<f32>(tile_a[kk * TILE + lid.y * 4u], tile_a[kk * TILE + lid.y * 4u + 1u],
                tile_a[kk * TILE + lid.y * 4u + 2u], tile_a[kk * TILE + lid.y * 4u + 3u]);
            let y = vec4<f32>(tile_b[kk * TILE + lid.x * 4u], tile_b[kk * TILE + lid.x * 4u + 1u],
                tile_b[kk * TILE + lid.x * 4u + 2u], tile_b[kk * TILE + lid.x * 4u + 3u]);
            acc[0] += x.x * y;
            acc[1] += x.y * y;
            acc[2] += x.z * y;
            acc[3] += x.w * y;
        }
        workgroupBarrier();
    }
    store_block(batch, tile_row + lid.y * 4u, tile_col + lid.x * 4u, acc);
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
