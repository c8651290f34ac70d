//! StyleGAN2 generator — Karras et al., "Analyzing and Improving the Image Quality of StyleGAN"
//! (CVPR 2020) — as laid out by rosinality/stylegan2-pytorch `model.py` (`Generator`, the
//! non-"fused=False" path, native upfirdn2d), with NaviGAN's weight-shift hook: any modulated
//! conv's RAW weight can be replaced by `W + Δ` per sample, before the equalized-lr scale,
//! modulation and demodulation.
//!
//! Loads: rosinality checkpoints (`{'g_ema': state_dict, 'latent_avg'}`), the generator inside
//! e4e checkpoints (`state_dict['decoder.*']`, `latent_avg`), and safetensors with `g_ema` keys.
//! Every size comes from the checkpoint's shapes. Try: `clipshape info stylegan2-ffhq-config-f.pt`.
//!
//! Struct and field names follow the Python classes and attributes, so a VarStore path is the
//! checkpoint key (`convs.3.conv.modulation.weight`).

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, Loader};
use crate::error::{Error, Result};
use crate::nn::EqualLinear;
use crate::ops::{floor_div, fused_leaky_relu, pixel_norm, upfirdn2d};
use crate::random::seeded_normal;

/// rosinality's default `lr_mlp`; not recoverable from the weights, and every released
/// checkpoint was trained with it.
pub const DEFAULT_LR_MLP: f64 = 0.01;

/// Architecture facts, all read off a checkpoint's shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub size: i64,
    pub style_dim: i64,
    pub n_mlp: i64,
    pub lr_mlp: f64,
    /// (resolution, channels) from 4 px up to `size`.
    pub channels: Vec<(i64, i64)>,
    /// Taps of the 1-D blur kernel (`[1,3,3,1]` → 4).
    pub blur_taps: i64,
}

impl Config {
    pub fn log_size(&self) -> i64 {
        63 - (self.size as u64).leading_zeros() as i64
    }
    /// Number of W+ entries.
    pub fn n_latent(&self) -> i64 {
        self.log_size() * 2 - 2
    }
    /// Number of noise inputs (= styled convs).
    pub fn num_layers(&self) -> i64 {
        (self.log_size() - 2) * 2 + 1
    }
    pub fn channel(&self, res: i64) -> i64 {
        self.channels.iter().find(|(r, _)| *r == res).map(|(_, c)| *c).unwrap_or(0)
    }

    /// Reads the architecture from the keys under `prefix` (`g_ema.`, `state_dict.decoder.`, or "").
    pub fn infer(ck: &Checkpoint, prefix: &str) -> Result<Config> {
        let unknown = |reason: String| Error::UnknownArchitecture {
            path: ck.path().to_path_buf(),
            model: "StyleGAN2 generator",
            reason,
        };
        let shape = |key: &str| -> Result<Vec<i64>> {
            let full = format!("{prefix}{key}");
            ck.shape(&full).map(<[i64]>::to_vec).ok_or_else(|| unknown(format!("missing key `{full}`")))
        };
        let style1 = shape("style.1.weight")?;
        if style1.len() != 2 || style1[0] != style1[1] {
            return Err(unknown(format!("`{prefix}style.1.weight` has shape {style1:?}, expected [D, D]")));
        }
        let style_dim = style1[0];
        let mut n_mlp = 0;
        while ck.contains(&format!("{prefix}style.{}.weight", n_mlp + 1)) {
            n_mlp += 1;
        }
        let input = shape("input.input")?;
        if input.len() != 4 || input[2] != 4 || input[3] != 4 {
            return Err(unknown(format!("`{prefix}input.input` has shape {input:?}, expected [1, C, 4, 4]")));
        }
        let mut channels = vec![(4, input[1])];
        let mut n_blocks = 0;
        while ck.contains(&format!("{prefix}to_rgbs.{n_blocks}.conv.weight")) {
            let w = shape(&format!("convs.{}.conv.weight", 2 * n_blocks))?;
            if w.len() != 5 {
                return Err(unknown(format!("`{prefix}convs.{}.conv.weight` has shape {w:?}", 2 * n_blocks)));
            }
            channels.push((8 << n_blocks, w[1]));
            n_blocks += 1;
        }
        if n_blocks == 0 {
            return Err(unknown(format!("no `{prefix}to_rgbs.N` layers")));
        }
        let blur_taps = match ck.shape(&format!("{prefix}convs.0.conv.blur.kernel")) {
            Some(k) if k.len() == 2 && k[0] == k[1] && k[0] >= 2 => k[0],
            Some(k) => return Err(unknown(format!("blur kernel of shape {k:?}"))),
            None => return Err(unknown(format!("missing key `{prefix}convs.0.conv.blur.kernel`"))),
        };
        Ok(Config { size: 4 << n_blocks, style_dim, n_mlp, lr_mlp: DEFAULT_LR_MLP, channels, blur_taps })
    }
}

pub use crate::layer::LayerId;

/// A layer a shift can be learned for, as `clipshape info` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    pub id: LayerId,
    pub resolution: i64,
    pub weight_shape: Vec<i64>,
    /// Which W+ row styles this layer.
    pub wplus_index: i64,
}

/// `Blur` / `Upsample`: a stored FIR kernel and its padding.
struct Fir {
    kernel: Tensor,
    up: i64,
    pad: (i64, i64),
}

impl Fir {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        upfirdn2d(x, &self.kernel, self.up, 1, self.pad)
    }
}

/// `ModulatedConv2d` (demodulated, optionally upsampling by 2 with a transposed conv + blur).
pub struct ModulatedConv2d {
    pub weight: Tensor,
    pub modulation: EqualLinear,
    blur: Option<Fir>,
    in_channel: i64,
    out_channel: i64,
    kernel_size: i64,
    scale: f64,
    demodulate: bool,
}

impl ModulatedConv2d {
    #[allow(clippy::too_many_arguments)]
    fn new(
        l: &Loader,
        p: nn::Path,
        in_channel: i64,
        out_channel: i64,
        kernel_size: i64,
        style_dim: i64,
        demodulate: bool,
        upsample: bool,
        blur_taps: i64,
    ) -> Result<Self> {
        let blur = if upsample {
            let factor = 2;
            let pp = (blur_taps - factor) - (kernel_size - 1);
            let pad0 = floor_div(pp + 1, 2) + factor - 1;
            let pad1 = floor_div(pp, 2) + 1;
            Some(Fir { kernel: l.tensor(&(&p / "blur"), "kernel", &[blur_taps, blur_taps])?, up: 1, pad: (pad0, pad1) })
        } else {
            None
        };
        Ok(ModulatedConv2d {
            weight: l.tensor(&p, "weight", &[1, out_channel, in_channel, kernel_size, kernel_size])?,
            modulation: EqualLinear::new(l, &(&p / "modulation"), style_dim, in_channel, 1.0, false)?,
            blur,
            in_channel,
            out_channel,
            kernel_size,
            scale: 1.0 / ((in_channel * kernel_size * kernel_size) as f64).sqrt(),
            demodulate,
        })
    }

    /// `delta`, when given, is added to the raw weight: shape (1 or B, out, in, k, k).
    fn forward(&self, x: &Tensor, style: &Tensor, delta: Option<&Tensor>, opts: &Synthesis) -> Result<Tensor> {
        let (b, _, h, w) = x.size4()?;
        let (cin, cout, k) = (self.in_channel, self.out_channel, self.kernel_size);
        let style = self.modulation.forward(style)?.f_view([b, 1, cin, 1, 1])?;
        let raw = match delta {
            Some(d) => self.weight.f_add(d)?,
            None => self.weight.shallow_clone(),
        };
        let mut weight = raw.f_mul_scalar(self.scale)?.f_mul(&style)?;
        if self.demodulate {
            let demod = weight
                .f_square()?
                .f_sum_dim_intlist([2i64, 3, 4].as_slice(), false, None::<Kind>)?
                .f_add_scalar(1e-8)?
                .f_rsqrt()?;
            weight = weight.f_mul(&demod.f_view([b, cout, 1, 1, 1])?)?;
        }
        // Per-sample weights become one grouped conv over the batch folded into channels.
        let mut input = x.f_reshape([1, b * cin, h, w])?;
        let low = opts.bf16_for(cin);
        if low {
            input = input.f_to_kind(Kind::BFloat16)?;
            weight = weight.f_to_kind(Kind::BFloat16)?;
        }
        let back = |t: Tensor| if low { t.f_to_kind(Kind::Float) } else { Ok(t) };
        if let Some(blur) = &self.blur {
            let weight = weight.f_transpose(1, 2)?.f_reshape([b * cin, cout, k, k])?;
            let out = back(input.f_conv_transpose2d(&weight, None::<Tensor>, [2, 2], [0, 0], [0, 0], b, [1, 1])?)?;
            let (_, _, oh, ow) = out.size4()?;
            blur.forward(&out.f_view([b, cout, oh, ow])?)
        } else {
            let weight = weight.f_reshape([b * cout, cin, k, k])?;
            let pad = k / 2;
            let out = back(input.f_conv2d(&weight, None::<Tensor>, [1, 1], [pad, pad], [1, 1], b)?)?;
            Ok(out.f_view([b, cout, h, w])?)
        }
    }
}

/// `StyledConv` = ModulatedConv2d → NoiseInjection → FusedLeakyReLU.
pub struct StyledConv {
    pub conv: ModulatedConv2d,
    noise_weight: Tensor,
    activate_bias: Tensor,
}

impl StyledConv {
    fn new(l: &Loader, p: nn::Path, cin: i64, cout: i64, style_dim: i64, upsample: bool, taps: i64) -> Result<Self> {
        Ok(StyledConv {
            conv: ModulatedConv2d::new(l, &p / "conv", cin, cout, 3, style_dim, true, upsample, taps)?,
            noise_weight: l.tensor(&(&p / "noise"), "weight", &[1])?,
            activate_bias: l.tensor(&(&p / "activate"), "bias", &[cout])?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        style: &Tensor,
        noise: &Tensor,
        delta: Option<&Tensor>,
        opts: &Synthesis,
    ) -> Result<Tensor> {
        let out = self.conv.forward(x, style, delta, opts)?;
        let out = out.f_add(&noise.f_mul(&self.noise_weight)?)?;
        fused_leaky_relu(&out, &self.activate_bias)
    }
}

/// `ToRGB`: a 1×1 modulated conv without demodulation, plus the upsampled skip.
pub struct ToRgb {
    pub conv: ModulatedConv2d,
    bias: Tensor,
    upsample: Option<Fir>,
}

impl ToRgb {
    fn new(l: &Loader, p: nn::Path, cin: i64, style_dim: i64, upsample: bool, taps: i64) -> Result<Self> {
        let upsample = if upsample {
            let factor = 2;
            let pp = taps - factor;
            let pad = (floor_div(pp + 1, 2) + factor - 1, floor_div(pp, 2));
            Some(Fir { kernel: l.tensor(&(&p / "upsample"), "kernel", &[taps, taps])?, up: factor, pad })
        } else {
            None
        };
        Ok(ToRgb {
            conv: ModulatedConv2d::new(l, &p / "conv", cin, 3, 1, style_dim, false, false, taps)?,
            bias: l.tensor(&p, "bias", &[1, 3, 1, 1])?,
            upsample,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        style: &Tensor,
        skip: Option<&Tensor>,
        delta: Option<&Tensor>,
        opts: &Synthesis,
    ) -> Result<Tensor> {
        let out = self.conv.forward(x, style, delta, opts)?.f_add(&self.bias)?;
        match (skip, &self.upsample) {
            (Some(s), Some(up)) => Ok(out.f_add(&up.forward(s)?)?),
            (Some(s), None) => Ok(out.f_add(s)?),
            (None, _) => Ok(out),
        }
    }
}

/// Raw-weight deltas for one forward pass: at most one tensor per layer, (1 or B, out, in, k, k).
pub type LayerDeltas<'a> = [(LayerId, &'a Tensor)];

/// How a synthesis pass is computed. The default is the parity path: fp32, every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Synthesis {
    /// Stop after the block of this side (px) and return its skip output, a valid RGB image at
    /// that size (StyleGAN2's skip architecture sums an RGB output at every resolution). None
    /// or a side ≥ the generator's = the full image.
    pub stop_at: Option<i64>,
    /// Run the convs of layers with at least this many input channels in bfloat16 (inputs
    /// and modulated weights cast, outputs back to fp32). Pays on CPUs with avx512_bf16 /
    /// AMX, for the wide low-resolution layers only (BENCHMARKS.md, "bf16").
    pub bf16_min_channels: Option<i64>,
}

impl Synthesis {
    /// Where bf16 starts paying on this project's CPU: the 256- and 512-channel layers
    /// (≤ 64 px in config-f); the 32–128-channel high-resolution ones are memory-bound.
    pub const BF16_MIN_CHANNELS: i64 = 256;

    fn bf16_for(&self, in_channels: i64) -> bool {
        self.bf16_min_channels.is_some_and(|m| in_channels >= m)
    }
}

/// `Generator` (rosinality), frozen.
pub struct Generator {
    pub config: Config,
    pub vs: nn::VarStore,
    /// `style.1 … style.n_mlp` (index 0 of the Python Sequential is PixelNorm).
    style: Vec<EqualLinear>,
    input: Tensor,
    pub conv1: StyledConv,
    pub to_rgb1: ToRgb,
    pub convs: Vec<StyledConv>,
    pub to_rgbs: Vec<ToRgb>,
    noises: Vec<Tensor>,
}

impl Generator {
    /// Loads the generator found under `prefix` of an opened checkpoint onto `device`.
    pub fn load(ck: &Checkpoint, prefix: &str, device: Device) -> Result<Generator> {
        let config = Config::infer(ck, prefix)?;
        let loader = Loader::new(ck, prefix, "StyleGAN2 generator");
        let g = Self::build(&loader, config, device)?;
        loader.finish(|_| false)?;
        Ok(g)
    }

    fn build(l: &Loader, config: Config, device: Device) -> Result<Generator> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let d = config.style_dim;
        let taps = config.blur_taps;
        let style = (1..=config.n_mlp)
            .map(|i| EqualLinear::new(l, &(&root / "style" / i), d, d, config.lr_mlp, true))
            .collect::<Result<Vec<_>>>()?;
        let c4 = config.channel(4);
        let input = l.tensor(&(&root / "input"), "input", &[1, c4, 4, 4])?;
        let conv1 = StyledConv::new(l, &root / "conv1", c4, c4, d, false, taps)?;
        let to_rgb1 = ToRgb::new(l, &root / "to_rgb1", c4, d, false, taps)?;
        let mut convs = Vec::new();
        let mut to_rgbs = Vec::new();
        let mut cin = c4;
        for (j, &(_, cout)) in config.channels.iter().skip(1).enumerate() {
            convs.push(StyledConv::new(l, &root / "convs" / (2 * j), cin, cout, d, true, taps)?);
            convs.push(StyledConv::new(l, &root / "convs" / (2 * j + 1), cout, cout, d, false, taps)?);
            to_rgbs.push(ToRgb::new(l, &root / "to_rgbs" / j, cout, d, true, taps)?);
            cin = cout;
        }
        let noises = (0..config.num_layers())
            .map(|i| {
                let res = 1i64 << ((i + 5) / 2);
                l.tensor(&(&root / "noises"), &format!("noise_{i}"), &[1, 1, res, res])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Generator { config, vs, style, input, conv1, to_rgb1, convs, to_rgbs, noises })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn n_latent(&self) -> i64 {
        self.config.n_latent()
    }

    pub fn style_dim(&self) -> i64 {
        self.config.style_dim
    }

    /// The mapping network: z (B, D) → w (B, D).
    pub fn style(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = pixel_norm(z)?;
        for layer in &self.style {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// `G.mean_latent(n)`: the average w of `n` standard-normal z drawn from `seed`.
    pub fn mean_latent(&self, n: i64, seed: i64) -> Result<Tensor> {
        let z = seeded_normal(&[n, self.config.style_dim], seed, self.device())?;
        Ok(tch::no_grad(|| self.style(&z))?.f_mean_dim(0, true, None::<Kind>)?)
    }

    /// Every layer a shift can be learned for, in forward order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        LayerId::all(self.config.size as u32)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| {
                let weight_shape = self.layer_weight(id).ok()?.size();
                Some(LayerInfo { id, resolution: id.resolution(), weight_shape, wplus_index: id.wplus_index() })
            })
            .collect()
    }

    pub fn layer(&self, id: LayerId) -> Result<LayerInfo> {
        self.layers().into_iter().find(|l| l.id == id).ok_or_else(|| {
            Error::arg("layer", format!("`{id}` does not exist in this {} px generator", self.config.size))
        })
    }

    /// Resolves a layer name, listing the valid ones when it is unknown.
    pub fn layer_by_name(&self, name: &str) -> Result<LayerInfo> {
        let unknown = || {
            let names: Vec<String> = self.layers().iter().map(|l| l.id.to_string()).collect();
            Error::arg("layer", format!("unknown layer `{name}`; this generator has {}", names.join(", ")))
        };
        let id = LayerId::parse(name).ok_or_else(unknown)?;
        self.layer(id).map_err(|_| unknown())
    }

    /// The raw weight a shift for `id` is added to.
    pub fn layer_weight(&self, id: LayerId) -> Result<&Tensor> {
        let conv = match id {
            LayerId::Conv1 => &self.conv1.conv,
            LayerId::ToRgb1 => &self.to_rgb1.conv,
            LayerId::Convs(i) => &self.convs.get(i).ok_or_else(|| self.no_layer(id))?.conv,
            LayerId::ToRgbs(i) => &self.to_rgbs.get(i).ok_or_else(|| self.no_layer(id))?.conv,
        };
        Ok(&conv.weight)
    }

    fn no_layer(&self, id: LayerId) -> Error {
        Error::arg("layer", format!("`{id}` does not exist in this {} px generator", self.config.size))
    }

    /// Synthesis from W+ (B, n_latent, D) with the stored noise buffers, raw weights shifted by
    /// `deltas`. Output (B, 3, size, size), roughly in [-1, 1]. The parity path.
    pub fn synthesis(&self, latent: &Tensor, deltas: &LayerDeltas) -> Result<Tensor> {
        self.synthesis_with(latent, deltas, &Synthesis::default())
    }

    /// [`Self::synthesis`] computed as `opts` says: possibly stopped at a lower resolution
    /// (output (B, 3, s, s)), possibly partly in bf16.
    pub fn synthesis_with(&self, latent: &Tensor, deltas: &LayerDeltas, opts: &Synthesis) -> Result<Tensor> {
        let (b, n, d) = latent.size3()?;
        if n != self.n_latent() || d != self.style_dim() {
            return Err(Error::arg(
                "latent",
                format!(
                    "shape [{b}, {n}, {d}] does not fit this generator's W+ [B, {}, {}]",
                    self.n_latent(),
                    self.style_dim()
                ),
            ));
        }
        let stop = self.output_size(opts.stop_at)?;
        for (id, delta) in deltas {
            let w = self.layer_weight(*id)?.size();
            let s = delta.size();
            if s.len() != 5 || s[1..] != w[1..] || (s[0] != 1 && s[0] != b) {
                return Err(Error::arg(
                    "shift",
                    format!("delta for `{id}` has shape {s:?}, layer weight is {w:?} (batch {b})"),
                ));
            }
            if id.resolution() > stop {
                return Err(Error::arg(
                    "shift",
                    format!("`{id}` works at {} px, above the {stop} px this synthesis stops at", id.resolution()),
                ));
            }
        }
        let delta = |id: LayerId| deltas.iter().find(|(l, _)| *l == id).map(|(_, t)| *t);
        let style = |i: i64| latent.f_select(1, i);

        let mut out = self.input.f_repeat([b, 1, 1, 1])?;
        out = self.conv1.forward(&out, &style(0)?, &self.noises[0], delta(LayerId::Conv1), opts)?;
        let mut skip = self.to_rgb1.forward(&out, &style(1)?, None, delta(LayerId::ToRgb1), opts)?;
        let mut i = 1;
        for (j, to_rgb) in self.to_rgbs.iter().enumerate() {
            if 8 << j > stop {
                break;
            }
            let (c0, c1) = (2 * j, 2 * j + 1);
            let (n0, n1) = (&self.noises[c0 + 1], &self.noises[c1 + 1]);
            out = self.convs[c0].forward(&out, &style(i)?, n0, delta(LayerId::Convs(c0)), opts)?;
            out = self.convs[c1].forward(&out, &style(i + 1)?, n1, delta(LayerId::Convs(c1)), opts)?;
            skip = to_rgb.forward(&out, &style(i + 2)?, Some(&skip), delta(LayerId::ToRgbs(j)), opts)?;
            i += 2;
        }
        Ok(skip)
    }

    /// The side a synthesis stopped at `stop_at` returns: a power of two from 8 px to the
    /// generator's size (larger requests give the full size).
    pub fn output_size(&self, stop_at: Option<i64>) -> Result<i64> {
        let size = self.config.size;
        match stop_at {
            None => Ok(size),
            Some(s) if s >= size => Ok(size),
            Some(s) if s >= 8 && (s as u64).is_power_of_two() => Ok(s),
            Some(s) => Err(Error::arg(
                "optimize_size",
                format!("{s} px is not a power of two from 8 to the generator's {size} px"),
            )),
        }
    }

    /// W → W+ by repetition, with truncation toward `mean` when `truncation < 1`.
    pub fn wplus_from_w(&self, w: &Tensor, truncation: f64, mean: Option<&Tensor>) -> Result<Tensor> {
        let w = match (truncation < 1.0, mean) {
            (true, Some(m)) => m.f_add(&w.f_sub(m)?.f_mul_scalar(truncation)?)?,
            (true, None) => return Err(Error::arg("truncation", "truncation < 1 needs a mean latent")),
            (false, _) => w.shallow_clone(),
        };
        Ok(w.f_unsqueeze(1)?.f_repeat([1, self.n_latent(), 1])?)
    }
}

/// rosinality's channel table for `channel_multiplier` (2 = config-f), up to `size`.
pub fn config_f_channels(size: i64, channel_multiplier: i64) -> Vec<(i64, i64)> {
    let cm = channel_multiplier;
    [
        (4, 512),
        (8, 512),
        (16, 512),
        (32, 512),
        (64, 256 * cm),
        (128, 128 * cm),
        (256, 64 * cm),
        (512, 32 * cm),
        (1024, 16 * cm),
    ]
    .into_iter()
    .filter(|(r, _)| *r <= size)
    .collect()
}
