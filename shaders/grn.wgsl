// Global response normalisation (ConvNeXt-V2, `GlobalResponseNorm`) of channels-last
// `x [batch, positions, channels]`:
//   gx[b, c] = ‖x[b, :, c]‖₂,  nx = gx / (mean_c gx + 1e-6),  out = γ·(x·nx) + β + x.
// Three entries: `grn_norms` (one invocation per channel), `grn_scale` (one workgroup per
// batch: the mean over channels), `grn_apply` (elementwise).

alias T = f32;

struct Params {
    batch: u32,
    positions: u32,
    channels: u32,
    row_pitch: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> gamma: array<T>;
@group(0) @binding(2) var<storage, read> beta: array<T>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn grn_norms(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let b = gid.y;
    if c >= p.channels || b >= p.batch {
        return;
    }
    var s = 0.0;
    let base = b * p.positions * p.channels + c;
    for (var i = 0u; i < p.positions; i++) {
        let v = f32(x[base + i * p.channels]);
        s += v * v;
    }
    norms[b * p.channels + c] = sqrt(s);
}

@compute @workgroup_size(64, 1, 1)
fn grn_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let b = wid.x;
    let lid = lid3.x;
    var s = 0.0;
    for (var c = lid; c < p.channels; c += WG) {
        s += norms[b * p.channels + c];
    }
    part[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            part[lid] += part[lid + k];
        }
        workgroupBarrier();
    }
    let denom = part[0] / f32(p.channels) + 1e-6;
    for (var c = lid; c < p.channels; c += WG) {
        norms[b * p.channels + c] = norms[b * p.channels + c] / denom;
    }
}

@compute @workgroup_size(64, 1, 1)
fn grn_apply(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_pitch + gid.x;
    let n = p.batch * p.positions * p.channels;
    if i >= n {
        return;
    }
    let c = i % p.channels;
    let b = i / (p.positions * p.channels);
    let v = f32(x[i]);
    let nx = norms[b * p.channels + c];
    out[i] = T(f32(gamma[c]) * (v * nx) + f32(beta[c]) + v);
}
