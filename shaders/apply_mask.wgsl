// Stage 2: logits = scores + bias, in place. The bias is -inf (selected, never multiplied)
// where causal, window, key length or the boolean mask disallows a key, plus the additive
// mask and the mods' bias (ALiBi) elsewhere; mask mods disallow like any mask, and with a
// score_mod a key whose modded score is -inf counts as removed (-inf, whatever its bias). One
// workgroup per query row; it also records whether any key of the row is neither disallowed
// nor removed (a row that is not fully masked), which the later stages read.
#import common

@group(0) @binding(1) var<storage, read> tables: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;

#import masking
#import mods
@group(0) @binding(3) var<storage, read_write> work: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_alive: array<u32>;

const WORKGROUP: u32 = 64u;

var<workgroup> alive: atomic<u32>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    // Uniform across the workgroup, so the early return keeps barriers uniform.
    if (row >= params.rows) {
        return;
    }
    if (lid == 0u) {
        atomicStore(&alive, 0u);
    }
    workgroupBarrier();
    let i = row % params.q_len;
    let h = (row / params.q_len) % params.q_heads;
    let b = row / (params.q_len * params.q_heads);
    let bd = bounds_of(b);
    let base = row * params.total_len;
    var any_alive = false;
    for (var j = lid; j < params.total_len; j += WORKGROUP) {
        var logit = params.neg_inf;
        if (structurally_allowed(bd, i, j)) {
            var bias = mask_bias(b, h, i, j);
#ifdef MODS
            if (!mod_allowed(bd, b, h, i, j)) {
                bias = params.neg_inf;
            }
            bias += mod_bias(bd, h, i, j);
#endif
            let s = work[base + j];
            // A key the score_mod removed is -inf whatever its bias (NaN included).
            if (allows(bias) && !score_removed(s)) {
                any_alive = true;
                logit = s + bias;
            }
        }
        work[base + j] = logit;
    }
    if (any_alive) {
        atomicOr(&alive, 1u);
    }
    workgroupBarrier();
    if (lid == 0u) {
        row_alive[row] = atomicLoad(&alive);
    }
}
