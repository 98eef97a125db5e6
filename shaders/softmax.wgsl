// Stage 3: probs = softmax(logits) along the key axis, in place, stably (the row maximum is
// subtracted before exp). A fully masked row (no key with a bias above -inf, as recorded by
// apply_mask) becomes all zeros, never NaN. One workgroup per query row.
#import common

@group(0) @binding(1) var<storage, read> row_alive: array<u32>;
@group(0) @binding(2) var<storage, read_write> work: array<f32>;

const WORKGROUP: u32 = 64u;

var<workgroup> partial: array<f32, WORKGROUP>;

// Tree reduction over the workgroup; `op` 0 = max, 1 = sum. Every invocation gets the result.
fn reduce(lid: u32, value: f32, op: u32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let other = partial[lid + stride];
            if (op == 0u) {
                partial[lid] = max(partial[lid], other);
            } else {
                partial[lid] = partial[lid] + other;
            }
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(WORKGROUP)
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
        for (var j = lid; j < lt; j += WORKGROUP) {
            work[base + j] = 0.0;
        }
        return;
    }
    var m = params.neg_inf;
    for (var j = lid; j < lt; j += WORKGROUP) {
        m = max(m, work[base + j]);
    }
    m = reduce(lid, m, 0u);
    var sum = 0.0;
    for (var j = lid; j < lt; j += WORKGROUP) {
        let e = exp(work[base + j] - m);
        work[base + j] = e;
        sum += e;
    }
    sum = reduce(lid, sum, 1u);
    let inv = 1.0 / sum;
    for (var j = lid; j < lt; j += WORKGROUP) {
        work[base + j] = work[base + j] * inv;
    }
}
