//! The entry points: validate, choose a path, record, submit once, read back once.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::{present, submit_and_read, Held, Present, Recorded, Wait};
use crate::output::AttentionOutput;
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem, ExecutionPath};
use crate::{fused, split, staged};

/// Computes masked attention on the GPU and waits for the result.
///
/// Validates everything first ([`Error`] names the problem and the sizes); then uploads,
/// records every kernel into one submission and reads the results back once. The fused path
/// runs unless an intermediate is asked for (or [`AttentionOptions::path`] says otherwise).
/// A request over the binding limits runs as one submission per part, split over batch
/// entries and heads, with the same result (see
/// [`Tuning::max_binding_bytes`](crate::Tuning::max_binding_bytes)).
pub fn masked_attention(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    pollster::block_on(run(ctx, inputs, options, Wait::Block))
}

/// [`masked_attention`] without blocking the calling thread: a helper thread waits for the
/// device while the returned future is pending, so any executor can drive it.
pub async fn masked_attention_async(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    run(ctx, inputs, options, Wait::Thread).await
}

/// The path a request takes on this context: `Staged` or `Fused` (never `Auto`).
pub fn resolve_path(
    ctx: &Context,
    problem: &AttentionProblem,
    requested: ExecutionPath,
) -> Result<ExecutionPath> {
    let fused_ok = fused::supports(ctx, problem);
    match requested {
        ExecutionPath::Staged => Ok(ExecutionPath::Staged),
        ExecutionPath::Fused if problem.returns.any() => Err(Error::InvalidCombination(
            "the fused path returns no intermediates (scores, logits, probs): use the staged path",
        )),
        ExecutionPath::Fused => fused_ok.map(|()| ExecutionPath::Fused),
        ExecutionPath::Auto if !problem.returns.any() && fused_ok.is_ok() => {
            Ok(ExecutionPath::Fused)
        }
        ExecutionPath::Auto => Ok(ExecutionPath::Staged),
    }
}

async fn run(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
    wait: Wait,
) -> Result<AttentionOutput> {
    let _serial = ctx.serial().await;
    ctx.check_alive()?;
    let p = AttentionProblem::new(inputs, options)?;
    let path = resolve_path(ctx, &p, options.path)?;
    match split::plan(ctx, &p, inputs, path)? {
        None => run_whole(ctx, &p, inputs, path, wait).await,
        Some(parts) => split::run(ctx, &p, inputs, options, path, &parts, wait).await,
    }
}

/// Runs a validated problem that fits the limits on `path`: one submission, one read-back.
pub(crate) async fn run_whole(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    path: ExecutionPath,
    wait: Wait,
) -> Result<AttentionOutput> {
    let present = present(p, inputs)?;
    submit_and_read(ctx, p, present, wait, |held, present| {
        record(ctx, p, inputs, path, present, held)
    })
    .await
}

/// Which positions of `[B, Hq, Lq, Lt]` a request's masks allow (row-major, `true` = may
/// attend), computed on the GPU: every mask the GPU paths take, user `mask_mod` included,
/// which the CPU's [`crate::reference::allowed`] can only take as a Rust closure. Runs the
/// staged kernels on zero-valued q, k, v of head dim 1 (so the logits are the bias exactly)
/// without `score_mod`; reads no values of the inputs.
pub fn allowed_positions(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<Vec<bool>> {
    let p = AttentionProblem::new(inputs, options)?;
    let zeros = |t: &crate::Tensor| -> Result<crate::Tensor> {
        let mut shape = t.shape().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = 1;
        }
        let n = shape.iter().product();
        crate::Tensor::from_f32(shape, vec![0.0; n])
    };
    let (q, k, v) = (zeros(inputs.q)?, zeros(inputs.k)?, zeros(inputs.v)?);
    let past = match (inputs.past_k, inputs.past_v) {
        (Some(pk), Some(pv)) => Some((zeros(pk)?, zeros(pv)?)),
        _ => None,
    };
    let mask = match inputs.mask {
        Some(crate::Mask::Additive(t)) => Some(crate::Mask::Additive(crate::Tensor::from_f32(
            t.shape().to_vec(),
            t.to_f32_vec(),
        )?)),
        other => other.cloned(),
    };
    let mods = inputs.mods.map(|m| crate::MaskMods {
        score_mod: None,
        ..m.clone()
    });
    let mut zero_inputs = AttentionInputs::new(&q, &k, &v);
    if let Some((pk, pv)) = &past {
        zero_inputs = zero_inputs.with_past(pk, pv);
    }
    zero_inputs.kv_lengths = inputs.kv_lengths;
    zero_inputs.mask = mask.as_ref();
    zero_inputs.mods = mods.as_ref();
    let zero_options = AttentionOptions {
        scale: Some(1.0),
        softcap: 0.0,
        returns: crate::Returns {
            logits: true,
            ..Default::default()
        },
        path: ExecutionPath::Staged,
        ..options.clone()
    };
    let out = masked_attention(ctx, &zero_inputs, &zero_options)?;
    let logits = out
        .logits
        .ok_or(Error::Gpu("the staged path returned no logits".into()))?;
    debug_assert_eq!(logits.len(), p.score_len());
    let crate::TensorData::F32(logits) = logits.data() else {
        return Err(Error::Gpu(
            "the staged path returned logits that are not f32".into(),
        ));
    };
    crate::tensor::collected(
        "the allowed positions [B, Hq, Lq, Lt]",
        logits.len(),
        logits.iter().map(|&l| l != f32::NEG_INFINITY),
    )
}

/// Uploads the inputs of a problem that fits the limits and records `path` into one
/// encoder, with the read-back (what [`run_whole`] submits and [`crate::plan`] captures).
pub(crate) fn record(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    path: ExecutionPath,
    present: &Present,
    held: &mut Held<'_>,
) -> Result<Recorded> {
    match path {
        ExecutionPath::Fused => fused::record(ctx, p, inputs, present, held),
        _ => staged::record(ctx, p, inputs, held),
    }
}
