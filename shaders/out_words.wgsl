// Entry point of the kernels that write `out` one stored word per invocation (one f32 element
// or two packed f16/bf16 elements). The importing kernel declares `out: array<u32>` and
// `fn out_element(e: u32) -> f32`.

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    let first = w * per_word();
    if (first >= params.out_len) {
        return;
    }
    let lo = out_element(first);
    var hi = 0.0;
    if (per_word() == 2u && first + 1u < params.out_len) {
        hi = out_element(first + 1u);
    }
    out[w] = encode(lo, hi);
}
