// Whisper's log-mel normalisation on the GPU, per clip:
//
//   y = log10(max(mel, 1e-10));  y = max(y, max(y) − 8);  y = (y + 4) / 4
//
// and the transpose from [clip, frame, mel] to [clip, mel, frame], dropping the last frame as
// Whisper does. The max is a GPU reduction in two steps: log_partial_max writes one max per
// workgroup, clip_max reduces those per clip; normalize then reads one value per clip.

alias T = f32;

struct Params {
    clips: u32,
    frames: u32,
    mels: u32,
    out_frames: u32,
    partials: u32,
    row_pitch: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> mel: array<f32>;
@group(0) @binding(1) var<storage, read_write> maxima: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 64u;
// Elements each invocation of log_partial_max visits.
const PER_INVOCATION: u32 = 16u;
var<workgroup> partial: array<f32, 64>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    return partial[0];
}

// mel ← log10(max(mel, 1e-10)) in place; maxima[clip · partials + x] ← max over the chunk.
// Grid: x = chunk of one clip, y = clip.
@compute @workgroup_size(64, 1, 1)
fn log_partial_max(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let per_clip = p.frames * p.mels;
    let start = wid.x * WG * PER_INVOCATION;
    var m = -1.0e30;
    for (var k = 0u; k < PER_INVOCATION; k++) {
        let j = start + k * WG + lid;
        // Only the frames Whisper keeps count towards the max.
        if j < per_clip && j / p.mels < p.out_frames {
            let i = wid.y * per_clip + j;
            let y = log2(max(mel[i], 1e-10)) * 0.30102999566398120;
            mel[i] = y;
            m = max(m, y);
        }
    }
    let total = reduce_max(m, lid);
    if lid == 0u {
        maxima[wid.y * p.partials + wid.x] = total;
    }
}

// maxima[clip] ← max of the clip's partials (one workgroup per clip; written after the
// partials region).
@compute @workgroup_size(64, 1, 1)
fn clip_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var m = -1.0e30;
    for (var j = lid; j < p.partials; j += WG) {
        m = max(m, maxima[wid.x * p.partials + j]);
    }
    let total = reduce_max(m, lid);
    if lid == 0u {
        maxima[p.clips * p.partials + wid.x] = total;
    }
}

@compute @workgroup_size(256, 1, 1)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * p.row_pitch + gid.x;
    if e >= p.clips * p.mels * p.out_frames {
        return;
    }
    let t = e % p.out_frames;
    let m = (e / p.out_frames) % p.mels;
    let b = e / (p.out_frames * p.mels);
    let top = maxima[p.clips * p.partials + b];
    let y = mel[(b * p.frames + t) * p.mels + m];
    out[e] = T((max(y, top - 8.0) + 4.0) / 4.0);
}
