// Embedding lookup: out[t, j] = table[ids[t], j] for a [vocab, dim] table. Ids are checked
// against the vocabulary on the host; the kernel clamps them as well, so a bad id can never
// read outside the table.

alias T = f32;

struct Params {
    tokens: u32,
    dim: u32,
    vocab: u32,
    row_pitch: u32,
}

@group(0) @binding(0) var<storage, read> table: array<T>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_pitch + gid.x;
    if i >= p.tokens * p.dim {
        return;
    }
    let t = i / p.dim;
    let j = i % p.dim;
    let id = min(ids[t], p.vocab - 1u);
    out[i] = table[id * p.dim + j];
}
