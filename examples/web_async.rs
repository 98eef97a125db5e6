//! The async API on WebGPU: `Context::new_async` and `masked_attention_async` in a browser
//! (wasm32), where nothing may block, on the cases of `examples/common/web_cases.rs`. Each
//! call's future is polled by the browser's event loop; the report counts how often it returned
//! `Pending` (the device worked while the page's thread went on) and carries every output, which
//! `tests/wasm.rs` checks against the CPU reference. Each case is also recorded with
//! `record_attention` into the page's own encoder on its own buffers, `out` read back and the
//! device time taken with `gpu_time_async`, without blocking. The report is POSTed to `/report`
//! on the page's server.
//!
//! ```text
//! rustup target add wasm32-unknown-unknown
//! cargo install wasm-bindgen-cli --version <the wasm-bindgen version in Cargo.lock> --no-default-features
//! cargo build --target wasm32-unknown-unknown --example web_async
//! wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/debug/examples/web_async.wasm
//! # serve web/ and open /wasm.html (tests/wasm.rs does all of this in headless Chromium)
//! ```
//!
//! Natively the same futures run on `pollster` (which is all `masked_attention` is) and the
//! report goes to stdout: `cargo run --example web_async`.

#[path = "common/web_cases.rs"]
mod web_cases;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use serde_json::{json, Value};
use web_cases::WebCase;
use wgattn::{
    masked_attention_async, record_attention, Context, DType, GpuInputs, GpuMask, GpuTensor, Mask,
    Tensor,
};

/// A future and how many times it returned `Pending` before its output.
struct Counted<F: Future> {
    inner: Pin<Box<F>>,
    pending: u32,
}

impl<F: Future> Future for Counted<F> {
    type Output = (F::Output, u32);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.inner.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready((v, this.pending)),
            Poll::Pending => {
                this.pending += 1;
                Poll::Pending
            }
        }
    }
}

fn counted<F: Future>(f: F) -> Counted<F> {
    Counted {
        inner: Box::pin(f),
        pending: 0,
    }
}

/// Runs every case and the invalid request; the report as JSON.
async fn report() -> Value {
    let ctx = match Context::new_async().await {
        Ok(ctx) => ctx,
        Err(e) => return json!({ "fatal": format!("no context: {e}") }),
    };
    let info = ctx.adapter_info();
    let mut cases = Vec::new();
    for case in web_cases::cases() {
        let (result, pending) =
            counted(masked_attention_async(&ctx, &case.inputs(), &case.options)).await;
        cases.push(match result {
            Ok(out) => json!({
                "name": case.name,
                "shape": out.out.shape(),
                // Bit patterns: exact, and JSON has no NaN or infinity.
                "out_bits": out.out.to_f32_vec().iter().map(|x| x.to_bits()).collect::<Vec<u32>>(),
                "pending": pending,
            }),
            Err(e) => json!({ "name": case.name, "error": e.to_string() }),
        });
    }
    // The same cases recorded into the page's own encoder on its own buffers, with the
    // recordings' device time where the browser offers timestamp queries.
    ctx.set_gpu_timing(true);
    let mut recorded = Vec::new();
    for case in web_cases::cases() {
        recorded.push(match record(&ctx, &case).await {
            Ok((out, timed)) => json!({
                "name": case.name,
                "shape": out.shape(),
                "out_bits": out.to_f32_vec().iter().map(|x| x.to_bits()).collect::<Vec<u32>>(),
                "timed": timed,
            }),
            Err(e) => json!({ "name": case.name, "error": e.to_string() }),
        });
    }
    ctx.set_gpu_timing(false);
    let bad = web_cases::invalid();
    let (refused, _) = counted(masked_attention_async(&ctx, &bad.inputs(), &bad.options)).await;
    json!({
        "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "features": format!("{:?}", ctx.features()),
        "cases": cases,
        "recorded": recorded,
        "invalid": {
            "name": bad.name,
            "error": refused.err().map(|e| e.to_string()),
        },
    })
}

/// `record_attention` on `case`: its tensors in buffers of the page's own, recorded into its
/// encoder and submitted, `out` read back without blocking; with whether the recording
/// reported a device time (`gpu_time_async`).
async fn record(ctx: &Context, case: &WebCase) -> wgattn::Result<(Tensor, bool)> {
    let (device, queue) = (ctx.device(), ctx.queue());
    let buffer = |size: usize, usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("page tensor"),
            size: (size.max(16) as u64).next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        })
    };
    let upload = |bytes: &[u8]| {
        let b = buffer(
            bytes.len(),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(4), 0);
        queue.write_buffer(&b, 0, &padded);
        b
    };
    let (q, k, v) = (&case.q, &case.k, &case.v);
    let (q_buf, k_buf, v_buf) = (
        upload(&q.to_le_bytes()),
        upload(&k.to_le_bytes()),
        upload(&v.to_le_bytes()),
    );
    let mask_buf = case.mask.as_ref().map(|m| match m {
        Mask::Bool(b) => upload(&b.data().iter().map(|&x| x as u8).collect::<Vec<u8>>()),
        Mask::Additive(t) => upload(&t.to_le_bytes()),
    });
    // `[B, Hq, Lq, Dv]` or `bshd`: q's shape with the value size last.
    let mut out_shape = q.shape().to_vec();
    out_shape[3] = v.shape()[3];
    let out_bytes = out_shape.iter().product::<usize>() * q.dtype().size();
    let out_buf = buffer(
        out_bytes,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let read_buf = buffer(
        out_bytes,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );

    let mut inputs = GpuInputs::new(
        GpuTensor::new(&q_buf, q.shape(), q.dtype()),
        GpuTensor::new(&k_buf, k.shape(), k.dtype()),
        GpuTensor::new(&v_buf, v.shape(), v.dtype()),
    );
    inputs.kv_lengths = case.kv_lengths.as_deref();
    inputs.mask = match (&case.mask, &mask_buf) {
        (Some(Mask::Bool(m)), Some(b)) => {
            Some(GpuMask::Bool(GpuTensor::new(b, m.shape(), DType::F32)))
        }
        (Some(Mask::Additive(m)), Some(b)) => {
            Some(GpuMask::Additive(GpuTensor::new(b, m.shape(), m.dtype())))
        }
        _ => None,
    };
    let out = GpuTensor::new(&out_buf, &out_shape, q.dtype());
    let mut encoder = device.create_command_encoder(&Default::default());
    let recorded = record_attention(ctx, &mut encoder, &inputs, &case.options, &out)?;
    let size = (out_bytes as u64).next_multiple_of(4);
    encoder.copy_buffer_to_buffer(&out_buf, 0, &read_buf, 0, size);
    queue.submit([encoder.finish()]);

    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    read_buf.map_async(wgpu::MapMode::Read, ..size, move |r| {
        let _ = tx.send(r);
    });
    // On the web the browser's event loop completes the mapping; natively, wait here.
    #[cfg(not(target_arch = "wasm32"))]
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
    let mapped = rx.receive().await;
    if !matches!(mapped, Some(Ok(()))) {
        return Err(wgattn::Error::Gpu(format!(
            "reading out back failed: {mapped:?}"
        )));
    }
    let bytes = read_buf
        .get_mapped_range(..size)
        .map_err(|e| wgattn::Error::Gpu(e.to_string()))?
        .to_vec();
    let got = Tensor::from_le_bytes(out_shape, q.dtype(), &bytes[..out_bytes])?;
    let timed = recorded.gpu_time_async().await.is_some();
    Ok((got, timed))
}

#[cfg(target_arch = "wasm32")]
fn main() {
    // A panic would reach the page as a bare "unreachable" trap: send its message first (the
    // request starts when fetch is called, before the trap).
    std::panic::set_hook(Box::new(|info| {
        let _ = post(&json!({ "fatal": info.to_string() }).to_string());
    }));
    wasm_bindgen_futures::spawn_local(async {
        if let Some(sent) = post(&report().await.to_string()) {
            let _ = wasm_bindgen_futures::JsFuture::from(sent).await;
        }
    });
}

/// Starts a POST of `body` to the page's server's `/report`.
#[cfg(target_arch = "wasm32")]
fn post(body: &str) -> Option<wasm_bindgen_futures::js_sys::Promise> {
    let window = web_sys::window()?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&wasm_bindgen::JsValue::from_str(body));
    Some(window.fetch_with_str_and_init("/report", &init))
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    println!("{:#}", pollster::block_on(report()));
}
