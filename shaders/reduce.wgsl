// Tree reduction over the workgroup for kernels that declare `const WG`; `op` 0 = max,
// 1 = sum. Every invocation gets the result. Call from uniform control flow.
var<workgroup> red: array<f32, WG>;

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
