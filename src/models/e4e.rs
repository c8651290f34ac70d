//! e4e encoder — Tov et al., "Designing an Encoder for StyleGAN Image Manipulation"
//! (SIGGRAPH 2021) — as laid out by omertov/encoder4editing (`models/encoders/psp_encoders.py`
//! `Encoder4Editing(50, 'ir_se')`, `models/encoders/helpers.py` for the IR-SE50 units, and
//! `models/psp.py` for the checkpoint layout): an IR-SE50 backbone, a two-level FPN and one
//! `GradualStyleBlock` per W+ entry, predicting a single code `w0` plus per-entry offsets.
//!
//! Loads: the official e4e checkpoints (`e4e_ffhq_encode.pt`, `e4e_cars_encode.pt`, …:
//! `{'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg', 'opts'}`, prefix
//! `state_dict.encoder.`) and safetensors exports of the encoder's own state dict (prefix "").
//! Every width comes from the checkpoint's shapes. The output is pSp's `codes` BEFORE
//! `latent_avg` is added (see [`latent_avg`]). Try:
//! `clipshape encode e4e_ffhq_encode.pt photo.png --out w.safetensors`.
//!
//! Struct and field names follow the Python classes and attributes, so a VarStore path is the
//! checkpoint key (`input_layer.0.weight`, `body.3.res_layer.5.fc1.weight`,
//! `styles.0.convs.0.weight`, `latlayer1.weight`). BatchNorm runs in eval mode on the stored
//! running statistics; the `num_batches_tracked` counters are not needed and are skipped.

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, Loader};
use crate::error::{Error, Result};
use crate::nn::{BatchNorm2d, Conv2d, ConvSpec, EqualLinear, PReLU};

/// `torch.nn.BatchNorm2d`'s default epsilon (the reference never changes it).
/// `nn.LeakyReLU()`'s default slope, used inside `GradualStyleBlock`.
pub const LEAKY_SLOPE: f64 = 0.01;
/// `ProgressiveStage.Inference`: the stage a freshly constructed `Encoder4Editing` is in, hence
/// the stage every released checkpoint runs at. Offsets `1 ..= 18` are applied; with at most 18
/// W+ entries (1024 px) that is all of them.
pub const INFERENCE_STAGE: i64 = 18;
/// Largest input side: each style head halves its map 8 times in all (4 backbone stages to c3,
/// then 4 convs; or 3 + 5; or 2 + 6) and must end at 1×1, as `x.view(-1, out_c)` assumes.
pub const MAX_INPUT_SIDE: i64 = 256;
/// Where the encoder sits in the files users have: official e4e (`state_dict.encoder.`), a
/// bare pSp state dict (`encoder.`), or an encoder-only export ("").
pub const ENCODER_PREFIXES: [&str; 3] = ["state_dict.encoder.", "encoder.", ""];

const MODEL: &str = "e4e encoder";

/// Architecture facts, all read off a checkpoint's shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Channels of `input_layer` (64 in IR-SE50).
    pub stem: i64,
    /// Depth of the four backbone stages (64/128/256/512 in IR-SE50).
    pub widths: [i64; 4],
    /// `bottleneck_IR_SE` units per stage ([3, 4, 14, 3] for 50 layers).
    pub units: [usize; 4],
    /// `SEModule` channel reduction (16 in the reference): fc1 maps `depth → depth / r`.
    pub se_reduction: i64,
    /// Number of W+ entries (`style_count` = 2·log2(stylegan_size) − 2).
    pub n_styles: i64,
    /// Width of one W+ entry (512).
    pub style_dim: i64,
    /// Styles `0..coarse_ind` read c3 (16 px), `coarse_ind..middle_ind` p2 (32 px), the rest p1.
    pub coarse_ind: i64,
    pub middle_ind: i64,
}

impl Config {
    /// IR-SE50 at full width, as in every released e4e checkpoint; `n_styles` is 18 for
    /// 1024 px generators (FFHQ), 16 for 512 px (cars), 14 for 256 px (horses, churches).
    pub fn ir_se50(n_styles: i64) -> Config {
        Config {
            stem: 64,
            widths: [64, 128, 256, 512],
            units: [3, 4, 14, 3],
            se_reduction: 16,
            n_styles,
            style_dim: 512,
            coarse_ind: n_styles.min(3),
            middle_ind: n_styles.min(7),
        }
    }

    /// `e4e_ffhq_encode.pt`: 18 W+ entries.
    pub fn ffhq() -> Config {
        Config::ir_se50(18)
    }

    /// Total `bottleneck_IR_SE` units in `body`.
    pub fn n_units(&self) -> usize {
        self.units.iter().sum()
    }

    /// Index in `body` of the last unit of `stage` (0-based): the FPN taps c1/c2/c3 are stages
    /// 1/2/3, i.e. `body[6]`, `body[20]`, `body[23]` in IR-SE50 as the reference hard-codes.
    pub fn stage_end(&self, stage: usize) -> usize {
        self.units[..=stage].iter().sum::<usize>() - 1
    }

    /// Number of stride-2 convs in style head `i` (log2 of its `spatial`: 16, 32, 64 px).
    pub fn style_convs(&self, i: i64) -> i64 {
        if i < self.coarse_ind {
            4
        } else if i < self.middle_ind {
            5
        } else {
            6
        }
    }

    /// Reads the architecture from the keys under `prefix` (`state_dict.encoder.` or "").
    pub fn infer(ck: &Checkpoint, prefix: &str) -> Result<Config> {
        let unknown =
            |reason: String| Error::UnknownArchitecture { path: ck.path().to_path_buf(), model: MODEL, reason };
        let shape = |key: &str| -> Result<Vec<i64>> {
            let full = format!("{prefix}{key}");
            ck.shape(&full).map(<[i64]>::to_vec).ok_or_else(|| unknown(format!("missing key `{full}`")))
        };
        let conv_shape = |key: &str| -> Result<Vec<i64>> {
            let s = shape(key)?;
            if s.len() != 4 {
                return Err(unknown(format!(
                    "`{prefix}{key}` has shape {s:?}, expected a conv weight [out, in, kh, kw]"
                )));
            }
            Ok(s)
        };

        let stem = conv_shape("input_layer.0.weight")?[0];
        // Stages are runs of consecutive units with the same depth (each stage's first unit is
        // the one that changes depth, or body.0).
        let mut depths = Vec::new();
        while ck.contains(&format!("{prefix}body.{}.res_layer.1.weight", depths.len())) {
            depths.push(conv_shape(&format!("body.{}.res_layer.1.weight", depths.len()))?[0]);
        }
        if depths.is_empty() {
            return Err(unknown(format!("missing key `{prefix}body.0.res_layer.1.weight`")));
        }
        let mut stages: Vec<(i64, usize)> = Vec::new();
        for d in depths {
            match stages.last_mut() {
                Some((w, n)) if *w == d => *n += 1,
                _ => stages.push((d, 1)),
            }
        }
        if stages.len() != 4 {
            let found: Vec<String> = stages.iter().map(|(w, n)| format!("{n}×{w}")).collect();
            return Err(unknown(format!(
                "expected 4 backbone stages of bottleneck_IR_SE units (IR-SE50: 3×64, 4×128, 14×256, 3×512), found {}",
                found.join(", ")
            )));
        }
        let widths = [stages[0].0, stages[1].0, stages[2].0, stages[3].0];
        let units = [stages[0].1, stages[1].1, stages[2].1, stages[3].1];

        let fc1 = conv_shape("body.0.res_layer.5.fc1.weight")?;
        if fc1[0] < 1 || widths[0] % fc1[0] != 0 {
            return Err(unknown(format!(
                "`{prefix}body.0.res_layer.5.fc1.weight` has shape {fc1:?}: {} channels do not divide depth {}",
                fc1[0], widths[0]
            )));
        }
        let se_reduction = widths[0] / fc1[0];

        let mut n_styles = 0;
        while ck.contains(&format!("{prefix}styles.{n_styles}.linear.weight")) {
            n_styles += 1;
        }
        if n_styles == 0 {
            return Err(unknown(format!("missing key `{prefix}styles.0.linear.weight`")));
        }
        let linear = shape("styles.0.linear.weight")?;
        if linear.len() != 2 {
            return Err(unknown(format!("`{prefix}styles.0.linear.weight` has shape {linear:?}, expected [D, D]")));
        }
        Ok(Config {
            stem,
            widths,
            units,
            se_reduction,
            n_styles,
            style_dim: linear[0],
            coarse_ind: n_styles.min(3),
            middle_ind: n_styles.min(7),
        })
    }
}

/// `SEModule`: squeeze (global average) → fc1 (1×1, no bias) → ReLU → fc2 → sigmoid → rescale.
pub struct SEModule {
    pub fc1: Tensor,
    pub fc2: Tensor,
}

impl SEModule {
    fn new(l: &Loader, p: nn::Path, channels: i64, reduction: i64) -> Result<Self> {
        let mid = channels / reduction;
        Ok(SEModule {
            fc1: l.tensor(&(&p / "fc1"), "weight", &[mid, channels, 1, 1])?,
            fc2: l.tensor(&(&p / "fc2"), "weight", &[channels, mid, 1, 1])?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.f_mean_dim([2i64, 3].as_slice(), true, None::<Kind>)?;
        let s = s.f_conv2d(&self.fc1, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?.f_relu()?;
        let s = s.f_conv2d(&self.fc2, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?.f_sigmoid()?;
        Ok(x.f_mul(&s)?)
    }
}

/// `bottleneck_IR_SE.shortcut_layer`: `MaxPool2d(1, stride)` (pure subsampling) when the depth
/// is unchanged, else `Sequential(Conv2d 1×1 stride, BatchNorm2d)` (keys `.0`, `.1`).
pub enum ShortcutLayer {
    MaxPool { stride: i64 },
    Conv { conv: Conv2d, bn: BatchNorm2d },
}

/// `bottleneck_IR_SE`: `res_layer(x) + shortcut_layer(x)`, where `res_layer` is
/// `Sequential(BatchNorm2d(in), Conv3×3(in→depth), PReLU(depth), Conv3×3(depth→depth, stride),
/// BatchNorm2d(depth), SEModule(depth))` — indices 0…5, as in the keys.
pub struct BottleneckIrSe {
    pub shortcut_layer: ShortcutLayer,
    res_bn1: BatchNorm2d,
    res_conv1: Conv2d,
    res_prelu: PReLU,
    res_conv2: Conv2d,
    res_bn2: BatchNorm2d,
    res_se: SEModule,
}

impl BottleneckIrSe {
    fn new(l: &Loader, p: nn::Path, in_c: i64, depth: i64, stride: i64, se_reduction: i64) -> Result<Self> {
        let shortcut_layer = if in_c == depth {
            ShortcutLayer::MaxPool { stride }
        } else {
            let s = &p / "shortcut_layer";
            ShortcutLayer::Conv {
                conv: Conv2d::new(l, &(&s / 0), ConvSpec::new(in_c, depth, 1).stride(stride).no_bias())?,
                bn: BatchNorm2d::new(l, &(&s / 1), depth)?,
            }
        };
        let r = &p / "res_layer";
        Ok(BottleneckIrSe {
            shortcut_layer,
            res_bn1: BatchNorm2d::new(l, &(&r / 0), in_c)?,
            res_conv1: Conv2d::new(l, &(&r / 1), ConvSpec::new(in_c, depth, 3).padding(1).no_bias())?,
            res_prelu: PReLU::new(l, &(&r / 2), depth)?,
            res_conv2: Conv2d::new(l, &(&r / 3), ConvSpec::new(depth, depth, 3).stride(stride).padding(1).no_bias())?,
            res_bn2: BatchNorm2d::new(l, &(&r / 4), depth)?,
            res_se: SEModule::new(l, &r / 5, depth, se_reduction)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shortcut = match &self.shortcut_layer {
            // A 1×1 max pool is x[:, :, ::s, ::s].
            ShortcutLayer::MaxPool { stride: 1 } => x.shallow_clone(),
            ShortcutLayer::MaxPool { stride } => x.f_slice(2, 0, None, *stride)?.f_slice(3, 0, None, *stride)?,
            ShortcutLayer::Conv { conv, bn } => bn.forward(&conv.forward(x)?)?,
        };
        let res = self.res_bn1.forward(x)?;
        let res = self.res_prelu.forward(&self.res_conv1.forward(&res)?)?;
        let res = self.res_bn2.forward(&self.res_conv2.forward(&res)?)?;
        let res = self.res_se.forward(&res)?;
        Ok(res.f_add(&shortcut)?)
    }
}

/// `GradualStyleBlock(in_c, out_c, spatial)`: log2(spatial) stride-2 3×3 convs (with bias),
/// each followed by LeakyReLU(0.01) (`convs.0`, `convs.2`, …), down to 1×1, then EqualLinear.
pub struct GradualStyleBlock {
    pub convs: Vec<Conv2d>,
    pub linear: EqualLinear,
    out_c: i64,
}

impl GradualStyleBlock {
    fn new(l: &Loader, p: nn::Path, in_c: i64, out_c: i64, n_convs: i64) -> Result<Self> {
        let convs = (0..n_convs)
            .map(|j| {
                Conv2d::new(
                    l,
                    &(&p / "convs" / (2 * j)),
                    ConvSpec::new(if j == 0 { in_c } else { out_c }, out_c, 3).stride(2).padding(1),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GradualStyleBlock { convs, linear: EqualLinear::new(l, &(&p / "linear"), out_c, out_c, 1.0, false)?, out_c })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for conv in &self.convs {
            x = conv.forward(&x)?.f_leaky_relu()?;
        }
        let (b, c, h, w) = x.size4()?;
        if (c, h, w) != (self.out_c, 1, 1) {
            return Err(Error::Internal(format!(
                "style head ended at [{b}, {c}, {h}, {w}], expected [{b}, {}, 1, 1]",
                self.out_c
            )));
        }
        self.linear.forward(&x.f_view([b, self.out_c])?)
    }
}

/// `_upsample_add`: bilinear resize of the coarser map to the lateral's size (align_corners=True),
/// plus the lateral.
fn upsample_add(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = y.size4()?;
    Ok(x.f_upsample_bilinear2d([h, w], true, None, None)?.f_add(y)?)
}

/// `Encoder4Editing(50, 'ir_se')`, frozen, in eval mode.
pub struct Encoder4Editing {
    pub config: Config,
    pub vs: nn::VarStore,
    /// `input_layer = Sequential(Conv2d(3, 64, 3, 1, 1, bias=False), BatchNorm2d, PReLU)`.
    input_conv: Conv2d,
    input_bn: BatchNorm2d,
    input_prelu: PReLU,
    pub body: Vec<BottleneckIrSe>,
    pub styles: Vec<GradualStyleBlock>,
    pub latlayer1: Conv2d,
    pub latlayer2: Conv2d,
}

impl Encoder4Editing {
    /// Loads the encoder found under `prefix` of an opened checkpoint onto `device`.
    pub fn load(ck: &Checkpoint, prefix: &str, device: Device) -> Result<Encoder4Editing> {
        let config = Config::infer(ck, prefix)?;
        let loader = Loader::new(ck, prefix, MODEL);
        let e = Self::build(&loader, config, device)?;
        loader.finish(|k| k.ends_with("num_batches_tracked"))?;
        Ok(e)
    }

    /// Finds the prefix (see [`ENCODER_PREFIXES`]) and loads.
    pub fn load_from(ck: &Checkpoint, device: Device) -> Result<Encoder4Editing> {
        Self::load(ck, detect_prefix(ck)?, device)
    }

    fn build(l: &Loader, config: Config, device: Device) -> Result<Encoder4Editing> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let input = &root / "input_layer";
        let input_conv = Conv2d::new(l, &(&input / 0), ConvSpec::new(3, config.stem, 3).padding(1).no_bias())?;
        let input_bn = BatchNorm2d::new(l, &(&input / 1), config.stem)?;
        let input_prelu = PReLU::new(l, &(&input / 2), config.stem)?;
        // get_blocks(50): every stage starts with a stride-2 unit, stage 1 included.
        let mut body = Vec::with_capacity(config.n_units());
        let mut in_c = config.stem;
        for (stage, (&depth, &n)) in config.widths.iter().zip(&config.units).enumerate() {
            for u in 0..n {
                let stride = if u == 0 { 2 } else { 1 };
                let idx = config.units[..stage].iter().sum::<usize>() + u;
                body.push(BottleneckIrSe::new(l, &root / "body" / idx, in_c, depth, stride, config.se_reduction)?);
                in_c = depth;
            }
        }
        let fpn = config.widths[3];
        let styles = (0..config.n_styles)
            .map(|i| GradualStyleBlock::new(l, &root / "styles" / i, fpn, config.style_dim, config.style_convs(i)))
            .collect::<Result<Vec<_>>>()?;
        let latlayer1 = Conv2d::new(l, &(&root / "latlayer1"), ConvSpec::new(config.widths[2], fpn, 1))?;
        let latlayer2 = Conv2d::new(l, &(&root / "latlayer2"), ConvSpec::new(config.widths[1], fpn, 1))?;
        Ok(Encoder4Editing { config, vs, input_conv, input_bn, input_prelu, body, styles, latlayer1, latlayer2 })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn n_styles(&self) -> i64 {
        self.config.n_styles
    }

    pub fn style_dim(&self) -> i64 {
        self.config.style_dim
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let size = x.size();
        let fits = size.len() == 4
            && size[0] >= 1
            && size[1] == 3
            && size[2..].iter().all(|&s| (16..=MAX_INPUT_SIDE).contains(&s) && s % 16 == 0);
        if !fits {
            return Err(Error::arg(
                "x",
                format!(
                    "shape {size:?}: the encoder takes (B, 3, H, W) images in [-1, 1] with H, W multiples of 16 \
                     up to {MAX_INPUT_SIDE} (256×256 for faces, 192×256 for cars)"
                ),
            ));
        }
        if x.kind() != Kind::Float {
            return Err(Error::arg("x", format!("dtype {:?}, expected float32", x.kind())));
        }
        if x.device() != self.device() {
            return Err(Error::arg("x", format!("is on {:?}, the encoder on {:?}", x.device(), self.device())));
        }
        Ok(())
    }

    /// x (B, 3, H, W) in [-1, 1] → codes (B, n_styles, style_dim), WITHOUT `latent_avg`.
    ///
    /// `w0 = styles[0](c3)` is repeated over all entries, then entry i ≥ 1 gets
    /// `styles[i](features)` added, features switching from c3 to the FPN's p2 at `coarse_ind`
    /// and to p1 at `middle_ind` (inference stage: every offset up to [`INFERENCE_STAGE`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let mut x = self.input_prelu.forward(&self.input_bn.forward(&self.input_conv.forward(x)?)?)?;
        let taps = [self.config.stage_end(1), self.config.stage_end(2), self.config.stage_end(3)];
        let mut c = Vec::with_capacity(3);
        for (i, unit) in self.body.iter().enumerate() {
            x = unit.forward(&x)?;
            if taps.contains(&i) {
                c.push(x.shallow_clone());
            }
        }
        let (c1, c2, c3) = match c.as_slice() {
            [c1, c2, c3] => (c1, c2, c3),
            _ => return Err(Error::Internal(format!("FPN taps {taps:?} outside a {}-unit body", self.body.len()))),
        };

        let w0 = self.styles[0].forward(c3)?;
        let mut rows = vec![w0.shallow_clone()];
        let last = (INFERENCE_STAGE + 1).min(self.config.n_styles);
        let mut features = c3.shallow_clone();
        let mut p2 = None;
        for i in 1..self.config.n_styles {
            if i >= last {
                rows.push(w0.shallow_clone());
                continue;
            }
            if i == self.config.coarse_ind {
                let p = upsample_add(c3, &self.latlayer1.forward(c2)?)?;
                features = p.shallow_clone();
                p2 = Some(p);
            } else if i == self.config.middle_ind {
                let p2 = p2.as_ref().ok_or_else(|| Error::Internal("p1 needs p2".into()))?;
                features = upsample_add(p2, &self.latlayer2.forward(c1)?)?;
            }
            rows.push(w0.f_add(&self.styles[i as usize].forward(&features)?)?);
        }
        Ok(Tensor::f_stack(&rows, 1)?)
    }
}

/// The prefix under which `ck` holds an encoder, or `UnknownArchitecture` listing where it looked.
pub fn detect_prefix(ck: &Checkpoint) -> Result<&'static str> {
    ENCODER_PREFIXES.into_iter().find(|p| ck.contains(&format!("{p}input_layer.0.weight"))).ok_or_else(|| {
        let sample: Vec<&str> = ck.keys().take(5).collect();
        Error::UnknownArchitecture {
            path: ck.path().to_path_buf(),
            model: MODEL,
            reason: format!(
                "no `input_layer.0.weight` under `state_dict.encoder.`, `encoder.` or the root (first keys: {sample:?})"
            ),
        }
    })
}

/// pSp's `latent_avg` as (n_styles, style_dim) on `device`, the offset `codes` are relative to
/// (`start_from_latent_avg`). e4e files store it repeated per entry; a (D) or (1, D) mean is
/// repeated here. None when the file has none.
pub fn latent_avg(ck: &Checkpoint, config: &Config, device: Device) -> Result<Option<Tensor>> {
    let (n, d) = (config.n_styles, config.style_dim);
    let Some(shape) = ck.shape("latent_avg") else { return Ok(None) };
    let t = ck.tensor("latent_avg")?;
    let t = match shape {
        [s0, s1] if *s0 == n && *s1 == d => t,
        [s] if *s == d => t.f_view([1, d])?.f_repeat([n, 1])?,
        [1, s] if *s == d => t.f_repeat([n, 1])?,
        _ => {
            return Err(Error::Shape {
                path: ck.path().to_path_buf(),
                key: "latent_avg".into(),
                expected: vec![n, d],
                got: shape.to_vec(),
            })
        }
    };
    Ok(Some(t.f_to_kind(Kind::Float)?.f_to_device(device)?))
}

fn opts(ck: &Checkpoint) -> Option<&crate::checkpoint::torch::Value> {
    ck.pickle_root()?.get("opts")
}

/// `opts['stylegan_size']` of an e4e checkpoint (the generator resolution it was trained for).
/// e4e's own `setup_model` overrides it from `dataset_type`; the stored value is the truth.
pub fn opts_stylegan_size(ck: &Checkpoint) -> Option<i64> {
    opts(ck)?.get("stylegan_size")?.as_int()
}

/// `opts['dataset_type']` (`ffhq_encode`, `cars_encode`, `horse_encode`, `church_encode`).
pub fn opts_dataset_type(ck: &Checkpoint) -> Option<String> {
    opts(ck)?.get("dataset_type")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Config {
        Config {
            stem: 4,
            widths: [4, 8, 12, 16],
            units: [1, 2, 3, 1],
            se_reduction: 2,
            n_styles: 8,
            style_dim: 12,
            coarse_ind: 3,
            middle_ind: 7,
        }
    }

    #[test]
    fn config_is_inferred_from_a_random_state_dict() {
        let c = small();
        let sd = crate::models::init::e4e(&c, 3).unwrap();
        let ck = Checkpoint::from_tensors("random", sd);
        assert_eq!(Config::infer(&ck, "").unwrap(), c);
        let e = Encoder4Editing::load(&ck, "", Device::Cpu).unwrap();
        assert_eq!((e.config.stage_end(1), e.config.stage_end(2), e.config.stage_end(3)), (2, 5, 6));
        let x = Tensor::zeros([2, 3, 64, 48], (Kind::Float, Device::Cpu));
        let codes = tch::no_grad(|| e.forward(&x)).unwrap();
        assert_eq!(codes.size(), vec![2, 8, 12]);
        assert!(codes.isfinite().all().int64_value(&[]) == 1);
    }

    #[test]
    fn full_width_preset() {
        let c = Config::ffhq();
        assert_eq!((c.n_units(), c.stage_end(1), c.stage_end(2), c.stage_end(3)), (24, 6, 20, 23));
        assert_eq!(
            (c.coarse_ind, c.middle_ind, c.style_convs(2), c.style_convs(3), c.style_convs(17)),
            (3, 7, 4, 5, 6)
        );
    }

    #[test]
    fn seeded_state_dicts_repeat() {
        let a = crate::models::init::e4e(&small(), 5).unwrap();
        let b = crate::models::init::e4e(&small(), 5).unwrap();
        assert_eq!(a.len(), b.len());
        for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            assert!(ta.equal(tb), "{ka}");
        }
    }

    #[test]
    fn missing_key_is_unknown_architecture() {
        let sd: Vec<_> = crate::models::init::e4e(&small(), 1)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k != "input_layer.0.weight")
            .collect();
        let e = Config::infer(&Checkpoint::from_tensors("m", sd), "").unwrap_err();
        assert!(
            matches!(e, Error::UnknownArchitecture { .. }) && e.to_string().contains("input_layer.0.weight"),
            "{e}"
        );
    }
}
