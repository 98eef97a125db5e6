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
