// Stage 3: probs = softmax(logits) along the key axis, in place, stably (the row maximum is
// subtracted before exp). A fully masked row (no key with a bias above -inf, as recorded by
// apply_mask) becomes all zeros, never NaN. One workgroup per query row.
#import common

@group(0) @binding(1) var<storage, read> row_alive: array<u32>;
@group(0) @binding(2) var<storage, read_write> work: array<f32>;

const WG: u32 = 64u;

#import reduce

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let lt = params.total_len;
    let base = row * lt;
    if (row_alive[row] == 0u) {
        for (var j = lid; j < lt; j += WG) {
            work[base + j] = 0.0;
        }
        return;
    }
    var m = params.neg_inf;
    for (var j = lid; j < lt; j += WG) {
        m = max(m, work[base + j]);
    }
    m = reduce(lid, m, 0u);
    var sum = 0.0;
    for (var j = lid; j < lt; j += WG) {
        let e = exp(work[base + j] - m);
        work[base + j] = e;
        sum += e;
    }
    sum = reduce(lid, sum, 1u);
    let inv = 1.0 / sum;
    for (var j = lid; j < lt; j += WG) {
        work[base + j] = work[base + j] * inv;
    }
}
