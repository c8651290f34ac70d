//! Photo → W+: the 8-bit pixels a host hands over, made into the e4e encoder's input, then
//! encoded. Mirrors e4e's test transform (`Resize((256, 256))`, `ToTensor`,
//! `Normalize([0.5]*3, [0.5]*3)`; cars `Resize((192, 256))`), except that the resize runs in
//! float (antialiased bilinear, what PIL's bilinear downscale does) rather than on rounded 8-bit
//! values. The aspect ratio is not kept: cropping (and FFHQ alignment for faces) is the caller's.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::models::e4e::Encoder4Editing;

use crate::pixels::PixelFormat;
pub use crate::pixels::{ImageView, MAX_PIXELS, MAX_SIDE, MIN_SIDE};

/// The encoder input for `view`: (1, 3, out_h, out_w) float32 in [-1, 1] on `device`.
///
/// Alpha is composited over neutral mid-grey, 127.5/255, which is exactly 0 in [-1, 1]: a
/// pixel becomes `alpha · (rgb/127.5 − 1)`. Compositing happens before the resize, so
/// transparent pixels' colours never bleed into their neighbours. The resize is antialiased
/// bilinear (`_upsample_bilinear2d_aa`, align_corners=False), plain bilinear when enlarging.
pub fn to_encoder_input(view: &ImageView, out_h: i64, out_w: i64, device: Device) -> Result<Tensor> {
    to_encoder_input_cancellable(view, out_h, out_w, device, &|| false)
}

/// Rows of a picture converted at once: a 108 MP photo is read in strips of ≈ 4 MP, so the
/// float copy stays near 50 MB and a cancel is heard between strips.
const STRIP_PIXELS: i64 = 1 << 22;

/// [`to_encoder_input`], asking `cancelled` between strips of rows. The resize runs as its two
/// separable passes (across each strip of rows, then down the strips put together), which is
/// what `_upsample_bilinear2d_aa` computes in one call, bit for bit (tested).
pub fn to_encoder_input_cancellable(
    view: &ImageView,
    out_h: i64,
    out_w: i64,
    device: Device,
    cancelled: &dyn Fn() -> bool,
) -> Result<Tensor> {
    view.validate()?;
    for (name, side) in [("out_h", out_h), ("out_w", out_w)] {
        if !(1..=MAX_SIDE as i64).contains(&side) {
            return Err(Error::arg(name, format!("{side}; the output side must be within 1..={MAX_SIDE}")));
        }
    }
    let (h, w, c) = (view.height as i64, view.width as i64, view.format.channels() as i64);
    let rgb_order: [i64; 3] = match view.format {
        PixelFormat::Rgba8 | PixelFormat::Rgb8 => [0, 1, 2],
        PixelFormat::Bgra8 => [2, 1, 0],
    };
    let index = Tensor::f_from_slice(&rgb_order)?.f_to_device(device)?;
    let rows = (STRIP_PIXELS / w).clamp(1, h);
    let mut strips = Vec::new();
    for y0 in (0..h).step_by(rows as usize) {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let n = rows.min(h - y0);
        let mut bytes = crate::memory::with_capacity((n * w * c) as usize, || format!("{n} rows of the picture"))?;
        for y in y0..y0 + n {
            bytes.extend_from_slice(view.row(y as usize));
        }
        let pixels = Tensor::f_from_slice(&bytes)?
            .f_view([n, w, c])?
            .f_to_device(device)?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?
            .f_to_kind(Kind::Float)?;
        let mut x = pixels.f_index_select(1, &index)?.f_div_scalar(127.5)?.f_sub_scalar(1.0)?;
        if c == 4 {
            let alpha = pixels.f_narrow(1, 3, 1)?.f_div_scalar(255.0)?;
            x = x.f_mul(&alpha)?;
        }
        if w != out_w {
            x = x.f_internal_upsample_bilinear2d_aa([n, out_w], false, None, None)?;
        }
        strips.push(x);
    }
    let mut x = Tensor::f_cat(&strips, 2)?;
    if h != out_h {
        x = x.f_internal_upsample_bilinear2d_aa([out_h, out_w], false, None, None)?;
    }
    Ok(x.f_contiguous()?)
}

/// Inverts one photo: W+ (1, n_styles, style_dim) = `encoder(input) + latent_avg` (pSp with
/// `start_from_latent_avg`), at the input size `(h, w)` the encoder was trained for
/// (see [`Size::encoder_input_for`](crate::domain::Size::encoder_input_for)).
pub fn invert(
    encoder: &Encoder4Editing,
    latent_avg: Option<&Tensor>,
    view: &ImageView,
    size: (i64, i64),
    cancelled: &dyn Fn() -> bool,
) -> Result<Tensor> {
    let x = to_encoder_input_cancellable(view, size.0, size.1, encoder.device(), cancelled)?;
    let codes = tch::no_grad(|| encoder.forward(&x))?;
    match latent_avg {
        Some(avg) => {
            let want = [encoder.n_styles(), encoder.style_dim()];
            if avg.size() != want {
                return Err(Error::arg("latent_avg", format!("shape {:?}, expected {want:?}", avg.size())));
            }
            Ok(codes.f_add(&avg.f_unsqueeze(0)?)?)
        }
        None => Ok(codes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 12;
    const H: u32 = 10;

    /// A deterministic RGB pattern and its RGBA/BGRA/RGB encodings with opaque alpha.
    fn rgb(x: u32, y: u32) -> [u8; 3] {
        [(x * 20 + y) as u8, (y * 25 + 3 * x) as u8, ((x * y * 7) % 256) as u8]
    }

    fn image(format: PixelFormat, alpha: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..H {
            for x in 0..W {
                let [r, g, b] = rgb(x, y);
                match format {
                    PixelFormat::Rgba8 => out.extend_from_slice(&[r, g, b, alpha(x, y)]),
                    PixelFormat::Bgra8 => out.extend_from_slice(&[b, g, r, alpha(x, y)]),
                    PixelFormat::Rgb8 => out.extend_from_slice(&[r, g, b]),
                }
            }
        }
        out
    }

    fn input(data: &[u8], format: PixelFormat, out: (i64, i64)) -> Tensor {
        let view = ImageView::packed(data, W, H, format).unwrap();
        to_encoder_input(&view, out.0, out.1, Device::Cpu).unwrap()
    }

    fn arg_name(e: Error) -> (&'static str, String) {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument { name, .. } => (name, msg),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn byte_orders_give_the_same_tensor() {
        for out in [(H as i64, W as i64), (8, 8), (16, 20)] {
            let a = input(&image(PixelFormat::Rgba8, |_, _| 255), PixelFormat::Rgba8, out);
            let b = input(&image(PixelFormat::Bgra8, |_, _| 255), PixelFormat::Bgra8, out);
            let c = input(&image(PixelFormat::Rgb8, |_, _| 255), PixelFormat::Rgb8, out);
            assert_eq!(a.size(), vec![1, 3, out.0, out.1]);
            assert!(a.equal(&b) && a.equal(&c), "{out:?}");
        }
        let a = input(&image(PixelFormat::Rgb8, |_, _| 255), PixelFormat::Rgb8, (H as i64, W as i64));
        let [r, g, b] = rgb(5, 7);
        for (ch, v) in [r, g, b].into_iter().enumerate() {
            let got = a.double_value(&[0, ch as i64, 7, 5]);
            assert!((got - (v as f64 / 127.5 - 1.0)).abs() < 1e-6, "channel {ch}: {got}");
        }
        assert!(a.min().double_value(&[]) >= -1.0 && a.max().double_value(&[]) <= 1.0);
    }

    #[test]
    fn alpha_is_composited_over_mid_grey() {
        let alpha = |x: u32, _y: u32| [0u8, 51, 255][(x % 3) as usize];
        let t = input(&image(PixelFormat::Rgba8, alpha), PixelFormat::Rgba8, (H as i64, W as i64));
        for x in 0..W {
            let [r, _, _] = rgb(x, 4);
            let want = alpha(x, 4) as f64 / 255.0 * (r as f64 / 127.5 - 1.0);
            let got = t.double_value(&[0, 0, 4, x as i64]);
            assert!((got - want).abs() < 1e-6, "x {x}: {got} vs {want}");
        }
        // Fully transparent is exactly the grey that maps to 0, whatever the colour bytes say.
        let clear = input(&image(PixelFormat::Bgra8, |_, _| 0), PixelFormat::Bgra8, (8, 8));
        assert_eq!(clear.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn stride_padding_is_skipped() {
        let packed = image(PixelFormat::Rgba8, |x, y| ((x + y) * 20) as u8);
        let row = (W * 4) as usize;
        let stride = row + 9;
        let mut padded = Vec::new();
        for y in 0..H as usize {
            padded.extend_from_slice(&packed[y * row..(y + 1) * row]);
            if y + 1 < H as usize {
                padded.resize(padded.len() + stride - row, 0xAB);
            }
        }
        let view = ImageView::new(&padded, W, H, stride as u32, PixelFormat::Rgba8).unwrap();
        let got = to_encoder_input(&view, 16, 16, Device::Cpu).unwrap();
        assert!(got.equal(&input(&packed, PixelFormat::Rgba8, (16, 16))));
    }

    /// Issue #29: a huge photo is read in strips; the two passes over strips give what one
    /// call over the whole picture gives, bit for bit.
    #[test]
    fn strips_give_the_one_call_resize_exactly() {
        // 4.5 MP: two strips.
        let (w, h) = (2500u32, 1800u32);
        let data: Vec<u8> = (0..w * h * 4).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let view = ImageView::packed(&data, w, h, PixelFormat::Rgba8).unwrap();
        let ours = to_encoder_input(&view, 256, 192, Device::Cpu).unwrap();
        let pixels = Tensor::from_slice(&data).view([h as i64, w as i64, 4]).permute([2, 0, 1]).unsqueeze(0);
        let pixels = pixels.to_kind(Kind::Float);
        let x = (pixels.narrow(1, 0, 3) / 127.5 - 1.0) * (pixels.narrow(1, 3, 1) / 255.0);
        let whole = x.internal_upsample_bilinear2d_aa([256, 192], false, None, None);
        assert_eq!((&ours - &whole).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn downscaling_is_antialiased() {
        // One bright column in three: sampling would hit it every time, a low-pass averages it.
        let (w, h) = (96u32, 12u32);
        let data: Vec<u8> = (0..h).flat_map(|_| (0..w).map(|x| if x % 3 == 1 { 255 } else { 0 })).collect();
        let gray: Vec<u8> = data.iter().flat_map(|&v| [v, v, v]).collect();
        let view = ImageView::packed(&gray, w, h, PixelFormat::Rgb8).unwrap();
        let t = to_encoder_input(&view, 4, 32, Device::Cpu).unwrap();
        let max = t.max().double_value(&[]);
        assert!(max < 0.0, "aliased: max {max}");
        let flat = vec![200u8; (w * h * 3) as usize];
        let t = to_encoder_input(&ImageView::packed(&flat, w, h, PixelFormat::Rgb8).unwrap(), 256, 256, Device::Cpu)
            .unwrap();
        let want = 200.0 / 127.5 - 1.0;
        assert!((t.max().double_value(&[]) - want).abs() < 1e-5 && (t.min().double_value(&[]) - want).abs() < 1e-5);
    }

    #[test]
    fn bad_views_name_the_field() {
        let buf = vec![0u8; 64 * 64 * 4];
        /// (data, width, height, stride, field named, text in the message)
        type Case<'a> = (&'a [u8], u32, u32, u32, &'a str, &'a str);
        let cases: [Case; 8] = [
            (&buf, 0, 0, 0, "width", "at least 8"),
            (&buf, 1, 1, 4, "width", "at least 8"),
            (&buf, 16, 7, 64, "height", "at least 8"),
            (&buf, 20_000, 8, 80_000, "width", "16384"),
            (&buf, 16_384, 8_200, 65_536, "width, height", "2^27"),
            (&buf, 16, 16, 63, "stride", "64"),
            (&buf[..16 * 64 * 15 + 63], 16, 16, 16 * 64, "data", "needs at least"),
            (&[], 8, 8, 32, "data", "0 bytes"),
        ];
        for (data, w, h, stride, field, text) in cases {
            let (name, msg) = arg_name(ImageView::new(data, w, h, stride, PixelFormat::Rgba8).unwrap_err());
            assert_eq!(name, field, "{msg}");
            assert!(msg.contains(text), "{msg}");
        }
        // The last row needs no padding.
        assert!(ImageView::new(&buf[..16 * 64 * 15 + 64], 16, 16, 16 * 64, PixelFormat::Rgba8).is_ok());
        // Fields are public: a hand-built view is re-checked.
        let raw = ImageView { data: &buf, width: 8, height: 8, stride: 3, format: PixelFormat::Rgb8 };
        assert_eq!(arg_name(to_encoder_input(&raw, 256, 256, Device::Cpu).unwrap_err()).0, "stride");
        let ok = ImageView::packed(&buf, 8, 8, PixelFormat::Rgb8).unwrap();
        assert_eq!(arg_name(to_encoder_input(&ok, 0, 256, Device::Cpu).unwrap_err()).0, "out_h");
    }
}
