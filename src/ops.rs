//! Small differentiable ops shared by the models. Their reference is the plain-PyTorch
//! ("native") fallback of rosinality/stylegan2-pytorch's CUDA kernels, which is what the golden
//! data was computed with.

use tch::Tensor;

use crate::error::Result;

pub const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// `F.leaky_relu(x + bias, 0.2) * sqrt(2)` with the bias broadcast over channel dim 1.
/// tch exposes leaky_relu only with torch's default slope; `prelu` with one weight of 0.2 is the
/// same function, bit for bit, in one pass (a `maximum(y, 0.2·y)` took three, and its backward
/// 2.5× as long at 1024 px).
pub fn fused_leaky_relu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1i64; x.dim()];
    if shape.len() > 1 {
        shape[1] = -1;
    } else {
        shape[0] = -1;
    }
    let y = x.f_add(&bias.f_view(shape.as_slice())?)?;
    let slope = Tensor::f_full([1], 0.2, (y.kind(), y.device()))?;
    Ok(y.f_prelu(&slope)?.f_mul_scalar(SQRT_2)?)
}

/// `x * rsqrt(mean(x², dim=1) + 1e-8)`: StyleGAN's PixelNorm on the input of the mapping network.
pub fn pixel_norm(x: &Tensor) -> Result<Tensor> {
    let ms = x.f_square()?.f_mean_dim(1, true, None::<tch::Kind>)?;
    Ok(x.f_mul(&ms.f_add_scalar(1e-8)?.f_rsqrt()?)?)
}

/// FIR filtering with optional zero-insertion upsampling and downsampling, on (N, C, H, W).
///
/// Same semantics as upfirdn2d_native: insert `up - 1` zeros after every sample, pad by `pad.0`
/// before and `pad.1` after on both axes (negative pads crop), correlate with the flipped
/// kernel (i.e. convolve), then keep every `down`-th sample.
pub fn upfirdn2d(x: &Tensor, kernel: &Tensor, up: i64, down: i64, pad: (i64, i64)) -> Result<Tensor> {
    let (n, c, h, w) = x.size4()?;
    let (kh, kw) = kernel.size2()?;
    let mut out = if up > 1 {
        x.f_reshape([n, c, h, 1, w, 1])?.f_constant_pad_nd([0, up - 1, 0, 0, 0, up - 1])?.f_reshape([
            n,
            c,
            h * up,
            w * up,
        ])?
    } else {
        x.shallow_clone()
    };
    // A symmetric, non-negative pad is the conv's own zero padding: no padded copy of a map
    // that is 134 MB at 1024 px.
    let conv_pad = if up == 1 && pad.0 == pad.1 && pad.0 >= 0 {
        pad.0
    } else {
        out = out.f_constant_pad_nd([pad.0, pad.1, pad.0, pad.1])?;
        0
    };
    // A depthwise conv (groups = C). Folding the channels into the batch of a one-channel conv
    // gives the same numbers but hits libtorch's slowest CPU path: at 1024 px its backward took
    // 12.9 s of a 26 s edit step, the depthwise one 0.2 s (BENCHMARKS.md, "The blur").
    let k = kernel.f_flip([0, 1])?.f_view([1, 1, kh, kw])?.f_expand([c, 1, kh, kw], false)?.f_contiguous()?;
    out = out.f_conv2d(&k, None::<Tensor>, [1, 1], [conv_pad, conv_pad], [1, 1], c)?;
    if down > 1 {
        out = out.f_slice(2, 0, None, down)?.f_slice(3, 0, None, down)?;
    }
    Ok(out)
}

/// Python's `a // b` for the padding formulas copied from the reference (floor, not truncation).
pub fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn upfirdn2d_identity_kernel_with_zero_insertion() {
        let x = Tensor::arange(4, (Kind::Float, Device::Cpu)).view([1, 1, 2, 2]) + 1.0;
        let k = Tensor::ones([1, 1], (Kind::Float, Device::Cpu));
        let y = upfirdn2d(&x, &k, 2, 1, (0, 0)).unwrap();
        let want =
            Tensor::from_slice(&[1f32, 0., 2., 0., 0., 0., 0., 0., 3., 0., 4., 0., 0., 0., 0., 0.]).view([1, 1, 4, 4]);
        assert_eq!(y.size(), vec![1, 1, 4, 4]);
        assert!(y.allclose(&want, 0.0, 0.0, false));
    }

    #[test]
    fn upfirdn2d_negative_pad_crops_and_down_subsamples() {
        let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 4, 4]);
        let k = Tensor::ones([1, 1], (Kind::Float, Device::Cpu));
        let y = upfirdn2d(&x, &k, 1, 2, (-1, 0)).unwrap();
        // Crop the first row/col → rows/cols 1..4, then every second: rows/cols 1 and 3.
        let want = Tensor::from_slice(&[5f32, 7., 13., 15.]).view([1, 1, 2, 2]);
        assert!(y.allclose(&want, 0.0, 0.0, false));
    }

    #[test]
    fn upfirdn2d_flips_an_asymmetric_kernel() {
        let x = Tensor::from_slice(&[0f32, 1., 0.]).view([1, 1, 1, 3]);
        let k = Tensor::from_slice(&[1f32, 2.]).view([1, 2]);
        // Convolution: y[i] = sum_j x[i + j] * k[1 - j] → [x0*2 + x1*1, x1*2 + x2*1].
        let y = upfirdn2d(&x, &k, 1, 1, (0, 0)).unwrap();
        let want = Tensor::from_slice(&[1f32, 2.]).view([1, 1, 1, 2]);
        assert!(y.allclose(&want, 0.0, 0.0, false), "{y}");
    }

    #[test]
    fn fused_leaky_relu_matches_definition() {
        let x = Tensor::from_slice(&[-1f32, 2.]).view([1, 2]);
        let b = Tensor::from_slice(&[0.5f32, -1.]);
        let y = fused_leaky_relu(&x, &b).unwrap();
        let want = Tensor::from_slice(&[-0.5f32 * 0.2, 1.0]).view([1, 2]) * SQRT_2;
        assert!(y.allclose(&want, 1e-6, 1e-6, false));
    }

    #[test]
    fn fused_leaky_relu_has_the_gradient_of_a_leaky_relu() {
        let x = Tensor::from_slice(&[-1f32, 2.]).view([1, 2]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32, -1.]);
        fused_leaky_relu(&x, &b).unwrap().sum(tch::Kind::Float).backward();
        let want = Tensor::from_slice(&[0.2f32, 1.0]).view([1, 2]) * SQRT_2;
        assert!(x.grad().allclose(&want, 1e-6, 1e-6, false), "{}", x.grad());
    }

    #[test]
    fn floor_div_is_pythons() {
        assert_eq!(floor_div(-1, 2), -1);
        assert_eq!(floor_div(3, 2), 1);
    }
}
