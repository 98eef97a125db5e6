// Reduction over the workgroup for kernels that declare `const WG`; `op` 0 = max, 1 = sum.
// Every invocation gets the result. Call from uniform control flow.
//
// With SUBGROUPS each subgroup reduces in registers and its first active invocation leaves
// the result in its own slot (the others leave the identity), so the result is right for
// any subgroup size and any mapping of invocations to subgroups; then every invocation
// folds the WG slots in the same order (the same bits on every run). Without, a tree in
// workgroup memory.
var<workgroup> red: array<f32, WG>;

#ifdef SUBGROUPS
fn reduce(lid: u32, value: f32, op: u32) -> f32 {
    var identity = 0.0;
    var part = 0.0;
    if (op == 0u) {
        identity = params.neg_inf;
        part = subgroupMax(value);
    } else {
        part = subgroupAdd(value);
    }
    red[lid] = select(identity, part, lid == subgroupBroadcastFirst(lid));
    workgroupBarrier();
    var result = identity;
    for (var t = 0u; t < trips(WG); t++) {
        if (op == 0u) {
            result = max(result, red[t]);
        } else {
            result = result + red[t];
        }
    }
    workgroupBarrier();
    return result;
}
#else
fn reduce(lid: u32, value: f32, op: u32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let other = red[lid + stride];
            if (op == 0u) {
                red[lid] = max(red[lid], other);
            } else {
                red[lid] = red[lid] + other;
            }
        }
        workgroupBarrier();
    }
    let result = red[0];
    workgroupBarrier();
    return result;
}
#endif
