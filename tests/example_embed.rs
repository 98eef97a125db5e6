//! Runs `examples/embed.rs` (attention recorded into the app's encoder, then the app's
//! colormap pass into a texture, one submission) and checks the PNG it writes, pixel by
//! pixel, against the CPU reference coloured the same way.

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod example;

use wgattn::{reference, AttentionInputs};

/// The example shader's colormap, on the CPU.
fn viridis(t: f32) -> [f32; 3] {
    let c: [[f32; 3]; 7] = [
        [0.2777, 0.0054, 0.3341],
        [0.1051, 1.4046, 1.3846],
        [-0.3309, 0.2148, 0.0951],
        [-4.6342, -5.7991, -19.3324],
        [6.2283, 14.1799, 56.6906],
        [4.7764, -13.7451, -65.3530],
        [-5.4355, 4.6459, 26.3124],
    ];
    let mut rgb = [0.0f32; 3];
    for (ch, out) in rgb.iter_mut().enumerate() {
        let mut x = c[6][ch];
        for k in (0..6).rev() {
            x = c[k][ch] + t * x;
        }
        *out = x.clamp(0.0, 1.0);
    }
    rgb
}

#[test]
fn embed_example_draws_the_attention_output() {
    let dir = std::env::temp_dir().join(format!("wgattn-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("embed.png");
    let (rgba, width, height) = example::run(&path).expect("the example runs");

    let (b, hq, _, l, d) = example::SHAPE;
    assert_eq!((width as usize, height as usize), (d, b * hq * l));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (width, height));
    assert_eq!(
        &buf[..info.buffer_size()],
        &rgba[..],
        "the PNG holds the texture"
    );

    let (q, k, v) = example::inputs();
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &example::options())
        .unwrap()
        .out
        .to_f32_vec();
    let mut worst = 0i32;
    for (e, &x) in want.iter().enumerate() {
        let expect = viridis((x * 0.5 + 0.5).clamp(0.0, 1.0));
        for ch in 0..3 {
            let got = rgba[e * 4 + ch] as i32;
            let exp = (expect[ch] * 255.0).round() as i32;
            worst = worst.max((got - exp).abs());
        }
        assert_eq!(rgba[e * 4 + 3], 255, "opaque");
    }
    assert!(
        worst <= 2,
        "a pixel is {worst}/255 off the reference's colour"
    );
    // Not one flat colour: the picture shows the data.
    let first = &rgba[..4];
    assert!(rgba.chunks(4).any(|p| p != first));
    std::fs::remove_dir_all(&dir).ok();
}
