// Texture matmul sharing A through subgroup broadcasts, for CPU drivers (lavapipe) with
// subgroups of exactly 8 invocations.
//
// Operands are packed into rgba32float textures by pack.wgsl, four k per texel: A as M rows of
// K, op(B) as N rows of K, in quads of rows for packed weights (B_GROUP). A subgroup (the 8
// invocations along x) owns 16 rows and 32 columns of C; each invocation owns 4 columns. Each
// invocation reads one A texel per 8 rows and the subgroup broadcasts it, so a texel read (a
// vector gather, the expensive step on CPU drivers) feeds 8 invocations instead of 1. Measured
// on lavapipe: about 2x mm_tex.
//
// Compiled after activation.wgsl and matmul_epilogue.wgsl, which declare T, Params, the
// overrides, the operand textures and the epilogue.

@compute @workgroup_size(8, 4, 1)
fn mm_tex_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z + p.batch_base;
    let block = blocks(wid);
    let row0 = (block.x * 4u + lid.y) * 16u;
    // Uniform across the subgroup, which shares lid.y: no broadcast loses a participant.
    if row0 >= p.m {
        return;
    }
    let col0 = (block.y * 8u + lid.x) * 4u;
    // Edge rows and columns are clamped: their loads stay in bounds, their results are not stored.
    let row_a = min(row0 + lid.x, p.m - 1u);
    let row_b = min(row0 + 8u + lid.x, p.m - 1u);
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
    var acc8 = vec4<f32>();
    var acc9 = vec4<f32>();
    var acc10 = vec4<f32>();
    var acc11 = vec4<f32>();
    var acc12 = vec4<f32>();
    var acc13 = vec4<f32>();
    var acc14 = vec4<f32>();
    var acc15 = vec4<f32>();
    let texels = (p.k + 3u) / 4u;
    // A block with at most 8 of its rows inside A (the last of M = 50 or 197) runs the first
    // half alone: one A load per step instead of two, half the accumulators (lavapipe: CLIP's
    // image tower, 50 rows, ~8% faster). The condition is uniform across the subgroup, so a
    // CPU driver runs one of the two loops; rows past M are not stored either way.
    if row0 + 8u >= p.m {
        for (var x = 0u; x < texels; x++) {
            let y0 = load_b(b0, x);
            let y1 = load_b(b1, x);
            let y2 = load_b(b2, x);
            let y3 = load_b(b3, x);
            let mine_a = textureLoad(tex_a, vec2<u32>(x, row_a));
            acc0 += dot4(subgroupBroadcast(mine_a, 0u), y0, y1, y2, y3);
            acc1 += dot4(subgroupBroadcast(mine_a, 1u), y0, y1, y2, y3);
            acc2 += dot4(subgroupBroadcast(mine_a, 2u), y0, y1, y2, y3);
            acc3 += dot4(subgroupBroadcast(mine_a, 3u), y0, y1, y2, y3);
            acc4 += dot4(subgroupBroadcast(mine_a, 4u), y0, y1, y2, y3);
            acc5 += dot4(subgroupBroadcast(mine_a, 5u), y0, y1, y2, y3);
            acc6 += dot4(subgroupBroadcast(mine_a, 6u), y0, y1, y2, y3);
            acc7 += dot4(subgroupBroadcast(mine_a, 7u), y0, y1, y2, y3);
        }
    } else {
        for (var x = 0u; x < texels; x++) {
            let y0 = load_b(b0, x);
            let y1 = load_b(b1, x);
            let y2 = load_b(b2, x);
            let y3 = load_b(b3, x);
            let mine_a = textureLoad(tex_a, vec2<u32>(x, row_a));
            let mine_b = textureLoad(tex_a, vec2<u32>(x, row_b));
            acc0 += dot4(subgroupBroadcast(mine_a, 0u), y0, y1, y2, y3);
            acc1 += dot4(subgroupBroadcast(mine_a, 1u), y0, y1, y2, y3);
            acc2 += dot4(subgroupBroadcast(mine_a, 2u), y0, y1, y2, y3);
            acc3 += dot4(subgroupBroadcast(mine_a, 3u), y0, y1, y2, y3);
            acc4 += dot4(subgroupBroadcast(mine_a, 4u), y0, y1, y2, y3);
            acc5 += dot4(subgroupBroadcast(mine_a, 5u), y0, y1, y2, y3);
            acc6 += dot4(subgroupBroadcast(mine_a, 6u), y0, y1, y2, y3);
            acc7 += dot4(subgroupBroadcast(mine_a, 7u), y0, y1, y2, y3);
            acc8 += dot4(subgroupBroadcast(mine_b, 0u), y0, y1, y2, y3);
            acc9 += dot4(subgroupBroadcast(mine_b, 1u), y0, y1, y2, y3);
            acc10 += dot4(subgroupBroadcast(mine_b, 2u), y0, y1, y2, y3);
            acc11 += dot4(subgroupBroadcast(mine_b, 3u), y0, y1, y2, y3);
            acc12 += dot4(subgroupBroadcast(mine_b, 4u), y0, y1, y2, y3);
            acc13 += dot4(subgroupBroadcast(mine_b, 5u), y0, y1, y2, y3);
            acc14 += dot4(subgroupBroadcast(mine_b, 6u), y0, y1, y2, y3);
            acc15 += dot4(subgroupBroadcast(mine_b, 7u), y0, y1, y2, y3);
        }
    }
    if col0 >= p.n {
        return;
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
    emit_row(batch, row0 + 8u, col0, acc8, b4);
    emit_row(batch, row0 + 9u, col0, acc9, b4);
    emit_row(batch, row0 + 10u, col0, acc10, b4);
    emit_row(batch, row0 + 11u, col0, acc11, b4);
    emit_row(batch, row0 + 12u, col0, acc12, b4);
    emit_row(batch, row0 + 13u, col0, acc13, b4);
    emit_row(batch, row0 + 14u, col0, acc14, b4);
    emit_row(batch, row0 + 15u, col0, acc15, b4);
}
