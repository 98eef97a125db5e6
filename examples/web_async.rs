//! The async API on WebGPU: `Context::new_async` and `masked_attention_async` in a browser
//! (wasm32), where nothing may block, on the cases of `examples/common/web_cases.rs`. Each
//! call's future is polled by the browser's event loop; the report counts how often it returned
//! `Pending` (the device worked while the page's thread went on) and carries every output, which
//! `tests/wasm.rs` checks against the CPU reference. The report is POSTed to `/report` on the
//! page's server.
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
use wgattn::{masked_attention_async, Context};

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
    let bad = web_cases::invalid();
    let (refused, _) = counted(masked_attention_async(&ctx, &bad.inputs(), &bad.options)).await;
    json!({
        "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "features": format!("{:?}", ctx.features()),
        "cases": cases,
        "invalid": {
            "name": bad.name,
            "error": refused.err().map(|e| e.to_string()),
        },
    })
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
