//! Runs `examples/embed.rs` (attention recorded into the app's encoder, then the app's
//! colormap pass into a texture, one submission) and checks the PNG it writes, pixel by
//! pixel, against the CPU reference coloured the same way.

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod example;

#[path = "common/picture.rs"]
mod picture;

use wgattn::{reference, AttentionInputs};

#[test]
fn embed_example_draws_the_attention_output() {
    let dir = std::env::temp_dir().join(format!("wgattn-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("embed.png");
    let (rgba, width, height) = example::run(&path).expect("the example runs");

    let (b, hq, _, l, d) = example::SHAPE;
    assert_eq!((width as usize, height as usize), (d, b * hq * l));
    let (png, png_width, png_height) = picture::read_png(&path);
    assert_eq!((png_width, png_height), (width, height));
    assert_eq!(png, rgba, "the PNG holds the texture");

    let (q, k, v) = example::inputs();
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &example::options())
        .unwrap()
        .out
        .to_f32_vec();
    picture::assert_shows(&rgba, (width, height), &want, d, example::app::rgb8);
    std::fs::remove_dir_all(&dir).ok();
}
