//! The plain layers the models share, each loaded strictly through the [`Loader`] (exact shapes,
//! VarStore path = checkpoint key) and named after the PyTorch module it ports.

use tch::{nn, Tensor};

use crate::checkpoint::Loader;
use crate::error::Result;
use crate::ops::fused_leaky_relu;

/// `nn.Linear(in, out)`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(l: &Loader, p: &nn::Path, in_dim: i64, out_dim: i64) -> Result<Self> {
        Ok(Linear { weight: l.tensor(p, "weight", &[out_dim, in_dim])?, bias: l.tensor(p, "bias", &[out_dim])? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, Some(&self.bias))?)
    }
}

/// rosinality's `EqualLinear`: the raw weight is stored, the equalized-lr scale
/// `lr_mul / sqrt(in)` (and `lr_mul` on the bias) applied in forward; optionally followed by the
/// fused leaky ReLU (the mapping network).
pub struct EqualLinear {
    pub weight: Tensor,
    pub bias: Tensor,
    scale: f64,
    lr_mul: f64,
    fused_lrelu: bool,
}

impl EqualLinear {
    pub fn new(l: &Loader, p: &nn::Path, in_dim: i64, out_dim: i64, lr_mul: f64, fused_lrelu: bool) -> Result<Self> {
        Ok(EqualLinear {
            weight: l.tensor(p, "weight", &[out_dim, in_dim])?,
            bias: l.tensor(p, "bias", &[out_dim])?,
            scale: lr_mul / (in_dim as f64).sqrt(),
            lr_mul,
            fused_lrelu,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.f_mul_scalar(self.scale)?;
        let b = if self.lr_mul == 1.0 { self.bias.shallow_clone() } else { self.bias.f_mul_scalar(self.lr_mul)? };
        if self.fused_lrelu {
            fused_leaky_relu(&x.f_linear(&w, None::<Tensor>)?, &b)
        } else {
            Ok(x.f_linear(&w, Some(&b))?)
        }
    }
}

/// `nn.Conv2d` with its stride and padding (the weights say nothing about them).
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

/// What a [`Conv2d`] looks like: `cin → cout`, `k × k`.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub cin: i64,
    pub cout: i64,
    pub k: i64,
    pub stride: i64,
    pub padding: i64,
    pub bias: bool,
}

impl ConvSpec {
    pub fn new(cin: i64, cout: i64, k: i64) -> Self {
        ConvSpec { cin, cout, k, stride: 1, padding: 0, bias: true }
    }
    pub fn stride(self, stride: i64) -> Self {
        ConvSpec { stride, ..self }
    }
    pub fn padding(self, padding: i64) -> Self {
        ConvSpec { padding, ..self }
    }
    pub fn no_bias(self) -> Self {
        ConvSpec { bias: false, ..self }
    }
}

impl Conv2d {
    pub fn new(l: &Loader, p: &nn::Path, s: ConvSpec) -> Result<Self> {
        Ok(Conv2d {
            weight: l.tensor(p, "weight", &[s.cout, s.cin, s.k, s.k])?,
            bias: if s.bias { Some(l.tensor(p, "bias", &[s.cout])?) } else { None },
            stride: s.stride,
            padding: s.padding,
        })
    }

    /// A conv made of given tensors (e.g. two heads fused into one call).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, stride: i64, padding: i64) -> Self {
        Conv2d { weight, bias, stride, padding }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        Ok(x.f_conv2d(&self.weight, self.bias.as_ref(), [s, s], [p, p], [1, 1], 1)?)
    }
}

/// `nn.BatchNorm2d` in eval mode: normalised with the stored running statistics.
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

/// PyTorch's default `eps` of BatchNorm and LayerNorm.
pub const NORM_EPS: f64 = 1e-5;

impl BatchNorm2d {
    pub fn new(l: &Loader, p: &nn::Path, c: i64) -> Result<Self> {
        Ok(BatchNorm2d {
            weight: l.tensor(p, "weight", &[c])?,
            bias: l.tensor(p, "bias", &[c])?,
            running_mean: l.tensor(p, "running_mean", &[c])?,
            running_var: l.tensor(p, "running_var", &[c])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_eps(x, NORM_EPS)
    }

    /// Eval mode with another `eps` (TensorFlow ports use 1e-3).
    pub fn forward_eps(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        Ok(x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            false,
            0.1,
            eps,
            true,
        )?)
    }
}

/// `nn.PReLU(c)`: one learned negative slope per channel.
pub struct PReLU {
    pub weight: Tensor,
}

impl PReLU {
    pub fn new(l: &Loader, p: &nn::Path, c: i64) -> Result<Self> {
        Ok(PReLU { weight: l.tensor(p, "weight", &[c])? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_prelu(&self.weight)?)
    }
}

/// `nn.LayerNorm(d)` over the last dimension.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl LayerNorm {
    pub fn new(l: &Loader, p: &nn::Path, d: i64) -> Result<Self> {
        Ok(LayerNorm { weight: l.tensor(p, "weight", &[d])?, bias: l.tensor(p, "bias", &[d])? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.weight.size()[0];
        Ok(x.f_layer_norm([d], Some(&self.weight), Some(&self.bias), NORM_EPS, false)?)
    }
}
