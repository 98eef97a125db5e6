// The block mask: classifies each (query block, key block) of the mods' mask as empty (0),
// full (1) or partial (2) by evaluating mod_allowed at every position of the block. One
// workgroup per block; the blocks are the fused kernel's tiles (blk_q x blk_k). Batch
// entries and heads the mask cannot tell apart share one set of blocks (stride 0).
#import common

@group(0) @binding(1) var<storage, read_write> tables: array<u32>;

#import masking
#import mods

const WORKGROUP: u32 = 64u;

// Bit 0: some position allowed; bit 1: some position disallowed.
var<workgroup> seen: atomic<u32>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blk = linear_workgroup(wid, nwg);
    let per_head = params.blk_qt * params.blk_kt;
    let heads = select(1u, params.q_heads, params.blk_sh != 0u);
    let batches = select(1u, params.batch, params.blk_sb != 0u);
    // Uniform across the workgroup, so the early return keeps barriers uniform.
    if (blk >= batches * heads * per_head) {
        return;
    }
    if (lid == 0u) {
        atomicStore(&seen, 0u);
    }
    workgroupBarrier();
    let kt = blk % params.blk_kt;
    let qt = (blk / params.blk_kt) % params.blk_qt;
    let h = (blk / per_head) % heads;
    let b = blk / (per_head * heads);
    let bd = bounds_of(b);
    let i0 = qt * params.blk_q;
    let j0 = kt * params.blk_k;
    let rows = min(params.blk_q, params.q_len - i0);
    let cols = min(params.blk_k, params.total_len - j0);
    var bits = 0u;
    for (var e = lid; e < rows * cols; e += WORKGROUP) {
        bits |= select(2u, 1u, mod_allowed(bd, b, h, i0 + e / cols, j0 + e % cols));
    }
    atomicOr(&seen, bits);
    workgroupBarrier();
    if (lid == 0u) {
        let s = atomicLoad(&seen);
        var kind = 2u;
        if (s == 1u) {
            kind = 1u;
        } else if (s == 2u) {
            kind = 0u;
        }
        tables[params.t_blocks + blk] = kind;
    }
}
