mod common;
use common::*;
use wgattn::*;

#[test]
fn smoke() {
    let mut rng = Rng::new(1);
    let q = random(&mut rng, &[1, 2, 5, 8], DType::F32, 1.0);
    let k = random(&mut rng, &[1, 2, 7, 8], DType::F32, 1.0);
    let v = random(&mut rng, &[1, 2, 7, 8], DType::F32, 1.0);
    let opts = AttentionOptions {
        causal: true,
        returns: Returns {
            scores: true,
            logits: true,
            probs: true,
        },
        ..Default::default()
    };
    let inputs = AttentionInputs::new(&q, &k, &v);
    let got = masked_attention(ctx(), &inputs, &opts).unwrap();
    let want = reference::masked_attention(&inputs, &opts).unwrap();
    println!("{:?}", ctx().adapter_info());
    assert_close(
        "scores",
        got.scores.as_ref().unwrap(),
        want.scores.as_ref().unwrap(),
        Tol::for_dtype(DType::F32),
    );
    assert_close(
        "logits",
        got.logits.as_ref().unwrap(),
        want.logits.as_ref().unwrap(),
        Tol::for_dtype(DType::F32),
    );
    assert_close(
        "probs",
        got.probs.as_ref().unwrap(),
        want.probs.as_ref().unwrap(),
        Tol::for_dtype(DType::F32),
    );
    assert_close("out", &got.out, &want.out, Tol::for_dtype(DType::F32));
}
