//! Out of GPU memory, forced for real on the software adapter. Its device memory is this
//! process's memory, so capping the process's address space (`RLIMIT_AS`) a little above what
//! it has mapped makes the driver refuse the next large allocation: lavapipe's
//! `vkAllocateMemory` returns `VK_ERROR_OUT_OF_DEVICE_MEMORY` and wgpu reports `OutOfMemory`.
//! Nothing large is touched while the cap holds (it bounds virtual memory, and the refused
//! call never writes its buffers); lavapipe reserves device memory without touching it, so
//! an uncapped "allocate until it fails" would never fail.
//!
//! One test in its own binary: the cap holds for the whole process while it is on.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use wgattn::{masked_attention, AttentionOutput, Context, DType, Error, Layout};

/// Room left above what the process has mapped while the cap holds: enough for the call's
/// small buffers and host bookkeeping, far less than its score buffers.
const HEADROOM: u64 = 32 << 20;

/// The engine on a software (CPU) Vulkan adapter, whatever else the machine has: only there
/// is device memory process memory. `from_device` installs no uncaptured-error handler, so
/// an error escaping the engine's error scopes panics (wgpu's default) and fails the test.
fn software_context() -> Context {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    let adapter = adapters
        .into_iter()
        .find(|a| a.get_info().device_type == wgpu::DeviceType::Cpu)
        .unwrap_or_else(|| {
            panic!(
                "the out-of-memory test needs the software Vulkan adapter (lavapipe): install \
                 mesa-vulkan-drivers; adapters found: {names:?}"
            )
        });
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("wgattn oom test"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("a device on the software adapter");
    Context::from_device(device, queue, adapter.get_info())
}

/// A field of `/proc/self/status` or `/proc/meminfo`, in bytes.
fn proc_kib(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{file} has no {field}"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{file}: cannot read {line:?}"));
    kib << 10
}

/// `RLIMIT_AS` lowered to what the process has mapped plus `headroom` (soft limit only); the
/// old limit comes back on drop, so a failing assertion cannot leave the process capped.
struct AddressSpaceCap {
    old: libc::rlimit,
}

impl AddressSpaceCap {
    fn new(headroom: u64) -> AddressSpaceCap {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `old` is a valid rlimit for getrlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
        let cap = proc_kib("/proc/self/status", "VmSize:") + headroom;
        let new = libc::rlimit {
            rlim_cur: cap.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: a valid rlimit; only the soft limit changes, so it can be raised back.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &new) }, 0);
        AddressSpaceCap { old }
    }
}

impl Drop for AddressSpaceCap {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `new`.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &self.old) };
    }
}

/// Runs `case` on `ctx`.
fn run(ctx: &Context, case: &Case) -> wgattn::Result<AttentionOutput> {
    masked_attention(ctx, &case.inputs(), &case.opts)
}

/// Runs `case` on `ctx` and compares everything with the reference.
fn check(ctx: &Context, what: &str, case: &Case) {
    let got = run(ctx, case).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = case.reference();
    compare(
        what,
        &got,
        &want,
        &case.opts.returns,
        Tols::for_dtype(case.dtype()),
    );
}

/// A call the device has no memory for fails with `Error::OutOfMemory` naming the buffer's
/// size; it leaves nothing allocated (the engine also frees what it kept for reuse), the
/// context is not marked lost, and the same call succeeds, correct, once memory is back.
#[test]
fn out_of_memory_is_an_error_and_the_context_recovers() {
    let available = proc_kib("/proc/meminfo", "MemAvailable:");
    assert!(
        available >= 2 << 30,
        "the out-of-memory test touches about 1 GiB after the failure and wants 2 GiB \
         available; {available} bytes are"
    );
    let ctx = software_context();
    let mut rng = Rng::new(5005);
    // Staged with every intermediate: q, k, v of 62.5 KiB each (under the mapped-upload
    // threshold), a 61 MiB score buffer and a 183 MiB read-back, within lavapipe's 128 MiB
    // binding limit, so the call is one submission.
    let (lq, lk) = (4000, 4000);
    let score_bytes = (lq * lk * 4) as u64;
    let big = Case::random(
        &mut rng,
        Dims::new(1, 1, lq, lk, 4),
        DType::F32,
        Layout::Bhsd,
    )
    .all_returns()
    .with_opts(|o| o.causal = true);
    // The same kernels at a small size first: pipelines compiled, allocator warmed.
    let small = Case::random(
        &mut rng,
        Dims::new(1, 1, 7, 33, 4),
        DType::F32,
        Layout::Bhsd,
    )
    .all_returns()
    .with_opts(|o| o.causal = true);
    check(&ctx, "small, before", &small);
    assert!(
        ctx.memory().live_bytes > 0,
        "the warm-up left buffers for reuse"
    );

    let result = {
        let _cap = AddressSpaceCap::new(HEADROOM);
        run(&ctx, &big)
    };
    if let Err(e) = &result {
        println!("the caller sees: {e}");
    }
    match result {
        Err(Error::OutOfMemory {
            what,
            requested,
            engine_bytes,
            message,
        }) => {
            assert!(
                requested >= score_bytes,
                "the refused buffer ({what}, {requested} bytes) is one of the large ones \
                 (scores: {score_bytes} bytes)"
            );
            assert!(
                requested > HEADROOM,
                "{requested} bytes fitted in the headroom"
            );
            assert!(
                what.ends_with("buffer"),
                "a buffer allocation failed: {what}"
            );
            assert!(engine_bytes > 0, "the warm-up's buffers were counted");
            assert!(!message.is_empty());
        }
        Err(e) => panic!("expected Error::OutOfMemory, got {e:?}"),
        Ok(_) => panic!("the call succeeded under an address-space cap it cannot fit in"),
    }
    assert_eq!(
        ctx.memory().live_bytes,
        0,
        "after running out of memory the engine holds no buffers (the call's went back, the \
         refused one was never counted, the ones kept for reuse were freed)"
    );
    assert_eq!(
        ctx.lost_reason(),
        None,
        "out of memory does not lose the device"
    );

    // Memory is back: the same call, and a small one, run correctly on the same context
    // (with outputs poisoned, so no stale or invalid buffer can pass for a result).
    ctx.set_poison_outputs(true);
    check(&ctx, "big, after", &big);
    check(&ctx, "small, after", &small);
    ctx.trim_memory();
    assert_eq!(
        ctx.memory().live_bytes,
        0,
        "every buffer went back to the pool"
    );
    block_mask_out_of_memory(&ctx);
}

/// `wgattn::block_mask`, whose buffers outlive the call, allocates them in the same
/// out-of-memory scope: refused, it is the same typed error (before, wgpu's default handler
/// panicked here), and the context goes on.
fn block_mask_out_of_memory(ctx: &Context) {
    let mut rng = Rng::new(5006);
    let tuning = ctx.tuning();
    // The smallest blocks (64 x 4 on lavapipe), so the classification is cheap if it ever
    // runs, and a per-head mask_mod, so the block mask is large beside the inputs.
    ctx.set_tuning(wgattn::Tuning {
        keys_per_tile: Some(4),
        rows_per_invocation: Some(1),
        ..tuning
    });
    let mods = wgattn::MaskMods {
        mask_mod: Some("return (q + k + h) % 3u != 0u;".into()),
        ..Default::default()
    };
    let mut with = |dims: Dims| {
        let mut c = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd);
        c.mods = Some(mods.clone());
        c
    };
    let small = with(Dims::new(1, 2, 9, 17, 4));
    let small_mask = wgattn::block_mask(ctx, &small.inputs(), &small.opts).expect("small");
    let (counts, (rows, keys)) = (small_mask.counts(), small_mask.block_size());
    let big = with(Dims::new(1, 64, 4096, 4096, 4));
    let result = {
        let _cap = AddressSpaceCap::new(HEADROOM);
        wgattn::block_mask(ctx, &big.inputs(), &big.opts)
    };
    match result {
        Err(Error::OutOfMemory {
            what, requested, ..
        }) => {
            // Not the tables before it: one of the block mask's own buffers (16 MiB).
            let bytes = (64 * 4096usize.div_ceil(rows) * 4096usize.div_ceil(keys) * 4) as u64;
            assert_eq!(requested, bytes, "the block mask's size ({what})");
            assert!(
                what.ends_with("buffer"),
                "a buffer allocation failed: {what}"
            );
        }
        Err(e) => panic!("expected Error::OutOfMemory, got {e:?}"),
        Ok(b) => panic!("a block mask of {:?} blocks fitted under the cap", b.grid()),
    }
    assert_eq!(
        ctx.lost_reason(),
        None,
        "out of memory does not lose the device"
    );
    let again = wgattn::block_mask(ctx, &small.inputs(), &small.opts).expect("after");
    assert_eq!(again.counts(), counts);
    ctx.set_tuning(tuning);
}
