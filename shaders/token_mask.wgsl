// Token-class masks: for every key (b, j), whether its token id is blocked, from the sorted
// list of blocked ids (binary search) or the per-id class table and the per-class flags.
// Writes `key_ok[b * Lt + j]` (1 = may be attended) into `tables` for mod_allowed.
#import common

@group(0) @binding(1) var<storage, read_write> tables: array<u32>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (e >= params.batch * params.total_len) {
        return;
    }
    let id = tables[params.t_ids + e];
    var blocked = false;
    if (params.n_classes > 0u) {
        // Every id is below n_classes (checked on the host); the flags cover every class.
        let cls = tables[params.t_classes + min(id, params.n_classes - 1u)];
        blocked = tables[params.t_class_blocked + cls] != 0u;
    } else {
        var lo = 0u;
        var hi = params.n_blocked;
        while (lo < hi) {
            let mid = (lo + hi) / 2u;
            if (tables[params.t_blocked + mid] < id) {
                lo = mid + 1u;
            } else {
                hi = mid;
            }
        }
        blocked = lo < params.n_blocked && tables[params.t_blocked + lo] == id;
    }
    tables[params.t_key_ok + e] = select(1u, 0u, blocked);
}
