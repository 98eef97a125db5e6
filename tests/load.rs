//! Under load: one context shared by many threads, thousands of calls of varied shapes, and a
//! device that goes away. Every result is checked against the CPU reference (or, for the long
//! run, every 97th), and nothing may panic.
mod common;

use std::sync::Arc;

use common::*;
use wgattn::{
    masked_attention, reference, AttentionInputs, AttentionOptions, BoolMask, Context, DType,
    Error, ExecutionPath, Mask, Tensor,
};

/// One randomly shaped call: inputs, options, and whether to check it.
struct Call {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Mask>,
    kv_lengths: Option<Vec<i64>>,
    options: AttentionOptions,
}

impl Call {
    /// Sizes small enough for thousands of calls on a software adapter; head dim fixed at 16
    /// (every other size varies) so the pipelines compile once.
    fn random(rng: &mut Rng) -> Call {
        let b = 1 + rng.below(2);
        let hkv = 1 + rng.below(2);
        let hq = hkv * (1 + rng.below(2));
        let lq = 1 + rng.below(20);
        let lk = 1 + rng.below(40);
        let dtype = if rng.bool(0.5) {
            DType::F32
        } else {
            DType::F16
        };
        let q = random(rng, &[b, hq, lq, 16], dtype, 1.0);
        let k = random(rng, &[b, hkv, lk, 16], dtype, 1.0);
        let v = random(rng, &[b, hkv, lk, 16], dtype, 1.0);
        let mask = rng.bool(0.3).then(|| {
            let data = (0..b * lk).map(|_| rng.bool(0.8)).collect();
            Mask::Bool(BoolMask::new([b, 1, 1, lk], data).unwrap())
        });
        let kv_lengths = rng
            .bool(0.3)
            .then(|| (0..b).map(|_| rng.below(lk + 1) as i64).collect());
        let options = AttentionOptions {
            causal: rng.bool(0.5),
            path: if rng.bool(0.2) {
                ExecutionPath::Staged
            } else {
                ExecutionPath::Auto
            },
            ..Default::default()
        };
        Call {
            q,
            k,
            v,
            mask,
            kv_lengths,
            options,
        }
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        let mut inputs = AttentionInputs::new(&self.q, &self.k, &self.v);
        if let Some(m) = &self.mask {
            inputs = inputs.with_mask(m);
        }
        if let Some(l) = &self.kv_lengths {
            inputs = inputs.with_kv_lengths(l);
        }
        inputs
    }

    /// Runs on the GPU and, when `check`, compares with the reference.
    fn run(&self, ctx: &Context, what: &str, check: bool) {
        let got = masked_attention(ctx, &self.inputs(), &self.options)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if check {
            let want = reference::masked_attention(&self.inputs(), &self.options).unwrap();
            assert_close(what, &got.out, &want.out, Tol::for_dtype(self.q.dtype()));
        }
    }
}

fn new_context() -> Context {
    let ctx = Context::new()
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}. Install mesa-vulkan-drivers."));
    ctx.set_poison_outputs(true);
    ctx
}

/// Eight threads x 100 calls of varied shapes on one shared context, each result checked.
#[test]
fn eight_threads_share_one_context() {
    let ctx = Arc::new(new_context());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(1000 + t);
                for n in 0..100 {
                    Call::random(&mut rng).run(&ctx, &format!("thread {t} call {n}"), true);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a thread panicked");
    }
}

/// Resident set size of this process, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// 10,000 calls of varied shapes: the engine's GPU memory and the process's RSS stop growing
/// once the pool holds a buffer of each size class in use (high-water marks printed).
#[test]
fn ten_thousand_calls_stay_bounded() {
    let ctx = new_context();
    let mut rng = Rng::new(2000);
    let mut marks = Vec::new();
    for n in 0..10_000 {
        Call::random(&mut rng).run(&ctx, &format!("call {n}"), n % 97 == 0);
        if n == 1_999 || n == 9_999 {
            marks.push((ctx.memory(), rss_bytes()));
        }
    }
    let (warm, end) = (marks[0], marks[1]);
    println!(
        "GPU bytes live/peak after 2,000 calls: {}/{}; after 10,000: {}/{}; RSS {:?} -> {:?}",
        warm.0.live_bytes, warm.0.peak_bytes, end.0.live_bytes, end.0.peak_bytes, warm.1, end.1
    );
    // Every shape here needs well under a MiB; the pool may keep a buffer per size class.
    assert!(
        end.0.peak_bytes < 64 << 20,
        "GPU memory grew to {} bytes",
        end.0.peak_bytes
    );
    assert!(
        end.0.live_bytes <= warm.0.live_bytes + (4 << 20),
        "the pool kept growing: {} -> {} bytes",
        warm.0.live_bytes,
        end.0.live_bytes
    );
    if let (Some(a), Some(b)) = (warm.1, end.1) {
        assert!(
            b <= a + (64 << 20),
            "RSS grew from {a} to {b} bytes over 8,000 calls"
        );
    }
}

/// A device that is destroyed (as on a GPU reset) makes every later call fail with
/// `DeviceLost`, never a panic.
#[test]
fn destroyed_device_is_an_error() {
    let ctx = new_context();
    let mut rng = Rng::new(3000);
    let call = Call::random(&mut rng);
    call.run(&ctx, "before", true);
    assert_eq!(ctx.lost_reason(), None);
    ctx.device().destroy();
    for n in 0..3 {
        match masked_attention(&ctx, &call.inputs(), &call.options) {
            Err(Error::DeviceLost(why)) => assert!(!why.is_empty()),
            Err(e) => panic!("call {n} after destroy: expected DeviceLost, got {e:?}"),
            Ok(_) => panic!("call {n} after destroy succeeded"),
        }
    }
    assert!(
        ctx.lost_reason().is_some(),
        "the context says it is unusable"
    );
}

/// The async entry point's future can move between threads (a multi-threaded executor).
#[test]
fn async_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let ctx = new_context();
    let mut rng = Rng::new(4000);
    let call = Call::random(&mut rng);
    let inputs = call.inputs();
    let future = wgattn::masked_attention_async(&ctx, &inputs, &call.options);
    assert_send(&future);
    pollster::block_on(future).unwrap();
}

/// The async entry point does not hold its executor's thread while the device works: on a
/// single-threaded executor the future returns `Pending`, the thread runs other work, and
/// the wake-up comes from the engine (no busy polling), with the result the reference gives.
///
/// Whether the first poll finds the device done is a race the engine's helper thread may win
/// (on GL the submission itself runs much of the work; one CI run in several saw it), and a
/// future that is ready at once is correct then. So a call may finish without yielding, but
/// not five in a row: an engine that waited on the executor's thread never yields at all.
#[test]
fn async_call_leaves_the_executor_thread_free() {
    use std::future::Future;
    use std::sync::{Condvar, Mutex};
    use std::task::{Context as TaskContext, Poll, Wake, Waker};

    #[derive(Default)]
    struct Signal {
        woken: Mutex<bool>,
        cond: Condvar,
    }
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            *self.woken.lock().unwrap() = true;
            self.cond.notify_all();
        }
    }

    let ctx = new_context();
    let mut rng = Rng::new(4100);
    // Large enough that the device is busy for a while after the first poll.
    let dims = Dims::new(1, 8, 256, 256, 64);
    let case = Case::random(&mut rng, dims, DType::F32, wgattn::Layout::Bhsd);
    let inputs = case.inputs();
    let signal = Arc::new(Signal::default());
    let waker = Waker::from(signal.clone());
    let want = case.reference();
    let (mut pending, mut other_work) = (0, 0u64);
    for _attempt in 0..5 {
        let mut future = std::pin::pin!(wgattn::masked_attention_async(&ctx, &inputs, &case.opts));
        let out = loop {
            match future.as_mut().poll(&mut TaskContext::from_waker(&waker)) {
                Poll::Ready(r) => break r.unwrap(),
                Poll::Pending => {
                    pending += 1;
                    // The thread is free: other tasks of the executor run here.
                    other_work += (0..1000u64).sum::<u64>();
                    let mut woken = signal.woken.lock().unwrap();
                    while !*woken {
                        woken = signal.cond.wait(woken).unwrap();
                    }
                    *woken = false;
                }
            }
        };
        assert_close("async out", &out.out, &want.out, Tol::for_dtype(DType::F32));
        if pending >= 1 {
            break;
        }
    }
    assert!(
        pending >= 1,
        "the future never yielded to its executor (five calls)"
    );
    assert!(other_work > 0);
    assert!(
        pending < 100,
        "woken {pending} times: polling, not waiting for a wake-up"
    );
}

/// Twelve `masked_attention_async` calls in flight at once on one thread, polled in turn
/// (what a browser or a single-threaded executor does with several requests): fused, staged
/// with every intermediate, f32/f16/bf16, causal or not, on a context whose binding limit of
/// 128 KiB splits several of them into several submissions. Each result matches the
/// reference. (On GL the context takes the calls in turn, through an async lock that never
/// blocks the thread; elsewhere they run side by side.)
#[test]
fn many_async_calls_in_flight_on_one_thread() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll, Wake, Waker};

    struct NoWake;
    impl Wake for NoWake {
        fn wake(self: Arc<Self>) {}
    }
    type Pending<'a> = Pin<Box<dyn Future<Output = wgattn::Result<wgattn::AttentionOutput>> + 'a>>;

    const LIMIT: u64 = 1 << 17;
    let ctx = tuned_context(wgattn::Tuning {
        max_binding_bytes: Some(LIMIT),
        ..wgattn::Tuning::AUTO
    });
    let mut rng = Rng::new(4200);
    let cases: Vec<Case> = (0..12)
        .map(|i| {
            let dims = Dims::new(
                1 + rng.below(3),
                2 + rng.below(6),
                1 + rng.below(40),
                1 + rng.below(300),
                8 * (1 + rng.below(8)),
            );
            let dtype = [DType::F32, DType::F16, DType::BF16][i % 3];
            let case = Case::random(&mut rng, dims, dtype, wgattn::Layout::Bhsd)
                .with_opts(|o| o.causal = i % 2 == 0);
            match i % 4 {
                1 => case.staged().all_returns(),
                3 => case.path(ExecutionPath::Fused),
                _ => case,
            }
        })
        .collect();
    let split = cases
        .iter()
        .filter(|c| (c.k.len() * c.k.dtype().size()) as u64 > LIMIT)
        .count();
    assert!(split >= 4, "only {split} of the calls split");

    let inputs: Vec<AttentionInputs<'_>> = cases.iter().map(Case::inputs).collect();
    let mut calls: Vec<Option<Pending<'_>>> = cases
        .iter()
        .zip(&inputs)
        .map(|(case, inputs)| {
            Some(Box::pin(wgattn::masked_attention_async(&ctx, inputs, &case.opts)) as Pending<'_>)
        })
        .collect();
    let waker = Waker::from(Arc::new(NoWake));
    let mut outs: Vec<Option<wgattn::AttentionOutput>> = cases.iter().map(|_| None).collect();
    while calls.iter().any(Option::is_some) {
        for (i, slot) in calls.iter_mut().enumerate() {
            let Some(call) = slot else { continue };
            if let Poll::Ready(r) = call.as_mut().poll(&mut TaskContext::from_waker(&waker)) {
                outs[i] = Some(r.unwrap_or_else(|e| panic!("call {i}: {e}")));
                *slot = None;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for (i, (case, out)) in cases.iter().zip(outs).enumerate() {
        let got = out.expect("every call finished");
        let tols = Tols::for_dtype(case.dtype());
        compare(
            &format!("call {i}"),
            &got,
            &case.reference(),
            &case.opts.returns,
            tols,
        );
    }
}
