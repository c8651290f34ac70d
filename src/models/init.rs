//! Randomly initialised state dicts in the official key layouts: full-size models for
//! benchmarks and tests without a download (the shapes are what matter; the values only need
//! to be sane). No library code uses it.

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::models::stylegan2::DEFAULT_LR_MLP;
use crate::models::{clip, e4e};
use crate::random::seeded_normal;

/// Random initial weights for benchmark models: every draw gets its own seed derived from one
/// base seed, so a state dict is reproducible whatever order its tensors are made in.
pub struct SeededInit {
    seed: i64,
    draws: i64,
}

impl SeededInit {
    pub fn new(seed: i64) -> Self {
        SeededInit { seed, draws: 0 }
    }

    /// N(0, std²) samples of `shape`, on the CPU.
    pub fn normal(&mut self, shape: &[i64], std: f64) -> Result<Tensor> {
        self.draws += 1;
        let s = self.seed.wrapping_mul(1_000_003).wrapping_add(self.draws);
        Ok(seeded_normal(shape, s, Device::Cpu)?.f_mul_scalar(std)?)
    }
}

/// A state dict in rosinality's layout with the reference initialisation (randn weights,
/// modulation bias 1, `[1,3,3,1]` FIR kernels): benchmarks and tests without a download.
pub fn stylegan2(style_dim: i64, n_mlp: i64, channels: &[(i64, i64)], seed: i64) -> Result<Vec<(String, Tensor)>> {
    crate::random::seeded(seed, || stylegan2_draws(style_dim, n_mlp, channels))
}

/// [`stylegan2`]'s tensors, drawn in order from torch's seeded generator.
fn stylegan2_draws(style_dim: i64, n_mlp: i64, channels: &[(i64, i64)]) -> Result<Vec<(String, Tensor)>> {
    let opts = (Kind::Float, Device::Cpu);
    let randn = |shape: &[i64]| Tensor::f_randn(shape, opts);
    let k1 = Tensor::from_slice(&[1f32, 3., 3., 1.]);
    let fir = k1.f_outer(&k1)?.f_div_scalar(64.0)?.f_mul_scalar(4.0)?;
    let mut sd: Vec<(String, Tensor)> = Vec::new();
    for i in 1..=n_mlp {
        sd.push((format!("style.{i}.weight"), randn(&[style_dim, style_dim])?.f_div_scalar(DEFAULT_LR_MLP)?));
        sd.push((format!("style.{i}.bias"), Tensor::f_zeros([style_dim], opts)?));
    }
    let modconv = |sd: &mut Vec<(String, Tensor)>, p: &str, cin: i64, cout: i64, k: i64| -> Result<()> {
        sd.push((format!("{p}.weight"), randn(&[1, cout, cin, k, k])?));
        sd.push((format!("{p}.modulation.weight"), randn(&[cin, style_dim])?));
        sd.push((format!("{p}.modulation.bias"), Tensor::f_ones([cin], opts)?));
        Ok(())
    };
    let styled = |sd: &mut Vec<(String, Tensor)>, p: &str, cout: i64| -> Result<()> {
        sd.push((format!("{p}.noise.weight"), Tensor::f_zeros([1], opts)?));
        sd.push((format!("{p}.activate.bias"), Tensor::f_zeros([cout], opts)?));
        Ok(())
    };
    let c4 = channels.first().map(|c| c.1).unwrap_or(0);
    sd.push(("input.input".into(), randn(&[1, c4, 4, 4])?));
    modconv(&mut sd, "conv1.conv", c4, c4, 3)?;
    styled(&mut sd, "conv1", c4)?;
    modconv(&mut sd, "to_rgb1.conv", c4, 3, 1)?;
    sd.push(("to_rgb1.bias".into(), Tensor::f_zeros([1, 3, 1, 1], opts)?));
    let mut cin = c4;
    for (j, &(_, cout)) in channels.iter().skip(1).enumerate() {
        let (a, b) = (2 * j, 2 * j + 1);
        modconv(&mut sd, &format!("convs.{a}.conv"), cin, cout, 3)?;
        sd.push((format!("convs.{a}.conv.blur.kernel"), fir.copy()));
        styled(&mut sd, &format!("convs.{a}"), cout)?;
        modconv(&mut sd, &format!("convs.{b}.conv"), cout, cout, 3)?;
        styled(&mut sd, &format!("convs.{b}"), cout)?;
        modconv(&mut sd, &format!("to_rgbs.{j}.conv"), cout, 3, 1)?;
        sd.push((format!("to_rgbs.{j}.bias"), Tensor::f_zeros([1, 3, 1, 1], opts)?));
        sd.push((format!("to_rgbs.{j}.upsample.kernel"), fir.copy()));
        cin = cout;
    }
    for i in 0..(2 * channels.len() as i64 - 1) {
        let res = 1i64 << ((i + 5) / 2);
        sd.push((format!("noises.noise_{i}"), randn(&[1, 1, res, res])?));
    }
    Ok(sd)
}

/// A state dict in the reference's layout and key names for `config`, randomly initialised
/// (He-scaled convs, unit BatchNorm statistics, PReLU 0.25): benchmarks without a download.
/// `Config::ffhq()` gives the full-width IR-SE50 with 18 styles of 512.
pub fn e4e(config: &e4e::Config, seed: i64) -> Result<Vec<(String, Tensor)>> {
    let opts = (Kind::Float, Device::Cpu);
    let mut sd: Vec<(String, Tensor)> = Vec::new();
    let mut init = SeededInit::new(seed);
    let mut randn = |shape: &[i64], std: f64| init.normal(shape, std);
    let conv = |randn: &mut dyn FnMut(&[i64], f64) -> Result<Tensor>, cout: i64, cin: i64, k: i64| {
        randn(&[cout, cin, k, k], (1.0 / (cin * k * k) as f64).sqrt())
    };
    let bn = |sd: &mut Vec<(String, Tensor)>, p: &str, c: i64| -> Result<()> {
        sd.push((format!("{p}.weight"), Tensor::f_ones([c], opts)?));
        sd.push((format!("{p}.bias"), Tensor::f_zeros([c], opts)?));
        sd.push((format!("{p}.running_mean"), Tensor::f_zeros([c], opts)?));
        sd.push((format!("{p}.running_var"), Tensor::f_ones([c], opts)?));
        Ok(())
    };
    let prelu = |c: i64| Tensor::f_full([c], 0.25, opts);

    sd.push(("input_layer.0.weight".into(), conv(&mut randn, config.stem, 3, 3)?));
    bn(&mut sd, "input_layer.1", config.stem)?;
    sd.push(("input_layer.2.weight".into(), prelu(config.stem)?));
    let mut in_c = config.stem;
    let mut idx = 0;
    for (&depth, &n) in config.widths.iter().zip(&config.units) {
        for _ in 0..n {
            let p = format!("body.{idx}");
            if in_c != depth {
                sd.push((format!("{p}.shortcut_layer.0.weight"), conv(&mut randn, depth, in_c, 1)?));
                bn(&mut sd, &format!("{p}.shortcut_layer.1"), depth)?;
            }
            bn(&mut sd, &format!("{p}.res_layer.0"), in_c)?;
            sd.push((format!("{p}.res_layer.1.weight"), conv(&mut randn, depth, in_c, 3)?));
            sd.push((format!("{p}.res_layer.2.weight"), prelu(depth)?));
            sd.push((format!("{p}.res_layer.3.weight"), conv(&mut randn, depth, depth, 3)?));
            bn(&mut sd, &format!("{p}.res_layer.4"), depth)?;
            let mid = depth / config.se_reduction;
            sd.push((format!("{p}.res_layer.5.fc1.weight"), conv(&mut randn, mid, depth, 1)?));
            sd.push((format!("{p}.res_layer.5.fc2.weight"), conv(&mut randn, depth, mid, 1)?));
            in_c = depth;
            idx += 1;
        }
    }
    let (fpn, d) = (config.widths[3], config.style_dim);
    for i in 0..config.n_styles {
        for j in 0..config.style_convs(i) {
            let cin = if j == 0 { fpn } else { d };
            sd.push((format!("styles.{i}.convs.{}.weight", 2 * j), conv(&mut randn, d, cin, 3)?));
            sd.push((format!("styles.{i}.convs.{}.bias", 2 * j), Tensor::f_zeros([d], opts)?));
        }
        sd.push((format!("styles.{i}.linear.weight"), randn(&[d, d], 1.0)?));
        sd.push((format!("styles.{i}.linear.bias"), Tensor::f_zeros([d], opts)?));
    }
    sd.push(("latlayer1.weight".into(), conv(&mut randn, fpn, config.widths[2], 1)?));
    sd.push(("latlayer1.bias".into(), Tensor::f_zeros([fpn], opts)?));
    sd.push(("latlayer2.weight".into(), conv(&mut randn, fpn, config.widths[1], 1)?));
    sd.push(("latlayer2.bias".into(), Tensor::f_zeros([fpn], opts)?));
    Ok(sd)
}

/// A state dict with the official key names and random weights (benchmarks, tests): the
/// shapes are what matter, the values only need to be sane.
pub fn clip(c: &clip::Config, seed: i64) -> Result<Vec<(String, Tensor)>> {
    let opts = (Kind::Float, Device::Cpu);
    let mut sd: Vec<(String, Tensor)> = Vec::new();
    let mut init = SeededInit::new(seed);
    let blocks = |sd: &mut Vec<(String, Tensor)>, init: &mut SeededInit, p: &str, d: i64, layers: i64| -> Result<()> {
        let std = (d as f64).powf(-0.5);
        for i in 0..layers {
            let b = format!("{p}.resblocks.{i}");
            sd.push((format!("{b}.attn.in_proj_weight"), init.normal(&[3 * d, d], std)?));
            sd.push((format!("{b}.attn.in_proj_bias"), Tensor::f_zeros([3 * d], opts)?));
            sd.push((format!("{b}.attn.out_proj.weight"), init.normal(&[d, d], std)?));
            sd.push((format!("{b}.attn.out_proj.bias"), Tensor::f_zeros([d], opts)?));
            for ln in ["ln_1", "ln_2"] {
                sd.push((format!("{b}.{ln}.weight"), Tensor::f_ones([d], opts)?));
                sd.push((format!("{b}.{ln}.bias"), Tensor::f_zeros([d], opts)?));
            }
            sd.push((format!("{b}.mlp.c_fc.weight"), init.normal(&[4 * d, d], std)?));
            sd.push((format!("{b}.mlp.c_fc.bias"), Tensor::f_zeros([4 * d], opts)?));
            sd.push((format!("{b}.mlp.c_proj.weight"), init.normal(&[d, 4 * d], std / 2.0)?));
            sd.push((format!("{b}.mlp.c_proj.bias"), Tensor::f_zeros([d], opts)?));
        }
        Ok(())
    };
    let (w, t) = (c.vision_width, c.transformer_width);
    let grid = c.image_resolution / c.vision_patch_size;
    blocks(&mut sd, &mut init, "visual.transformer", w, c.vision_layers)?;
    blocks(&mut sd, &mut init, "transformer", t, c.transformer_layers)?;
    let mut randn = |shape: &[i64], std: f64| init.normal(shape, std);
    let scale = (w as f64).powf(-0.5);
    sd.push(("visual.conv1.weight".into(), randn(&[w, 3, c.vision_patch_size, c.vision_patch_size], 0.02)?));
    sd.push(("visual.class_embedding".into(), randn(&[w], scale)?));
    sd.push(("visual.positional_embedding".into(), randn(&[grid * grid + 1, w], scale)?));
    sd.push(("visual.proj".into(), randn(&[w, c.embed_dim], scale)?));
    for ln in ["visual.ln_pre", "visual.ln_post"] {
        sd.push((format!("{ln}.weight"), Tensor::f_ones([w], opts)?));
        sd.push((format!("{ln}.bias"), Tensor::f_zeros([w], opts)?));
    }
    sd.push(("token_embedding.weight".into(), randn(&[c.vocab_size, t], 0.02)?));
    sd.push(("positional_embedding".into(), randn(&[c.context_length, t], 0.01)?));
    sd.push(("ln_final.weight".into(), Tensor::f_ones([t], opts)?));
    sd.push(("ln_final.bias".into(), Tensor::f_zeros([t], opts)?));
    sd.push(("text_projection".into(), randn(&[t, c.embed_dim], (t as f64).powf(-0.5))?));
    sd.push(("logit_scale".into(), Tensor::from((1.0f64 / 0.07).ln() as f32)));
    Ok(sd)
}

/// pytorch-fid's Inception-v3 (`pt_inception-2015-12-05-6726825d.pth`'s 472 keys: 94
/// `BasicConv2d`s as `*.conv.weight` + `*.bn.{weight,bias,running_mean,running_var}`, and the
/// unused 1008-way `fc`), with torchvision's widths divided by `divisor` (1 = the official
/// network): He-scaled random convolutions, identity BatchNorm statistics.
pub fn inception(divisor: i64, seed: i64) -> Result<Vec<(String, Tensor)>> {
    let opts = (Kind::Float, Device::Cpu);
    let w = |c: i64| (c / divisor).max(1);
    let mut init = SeededInit::new(seed);
    let mut sd: Vec<(String, Tensor)> = Vec::new();
    let mut conv = |sd: &mut Vec<(String, Tensor)>, key: &str, cin: i64, cout: i64, k: (i64, i64)| -> Result<()> {
        let std = (2.0 / (cin * k.0 * k.1) as f64).sqrt();
        sd.push((format!("{key}.conv.weight"), init.normal(&[cout, cin, k.0, k.1], std)?));
        sd.push((format!("{key}.bn.weight"), Tensor::f_ones([cout], opts)?));
        sd.push((format!("{key}.bn.bias"), Tensor::f_zeros([cout], opts)?));
        sd.push((format!("{key}.bn.running_mean"), Tensor::f_zeros([cout], opts)?));
        sd.push((format!("{key}.bn.running_var"), Tensor::f_ones([cout], opts)?));
        Ok(())
    };
    let (k1, k3, k5, k17, k71, k13, k31) = ((1, 1), (3, 3), (5, 5), (1, 7), (7, 1), (1, 3), (3, 1));
    conv(&mut sd, "Conv2d_1a_3x3", 3, w(32), k3)?;
    conv(&mut sd, "Conv2d_2a_3x3", w(32), w(32), k3)?;
    conv(&mut sd, "Conv2d_2b_3x3", w(32), w(64), k3)?;
    conv(&mut sd, "Conv2d_3b_1x1", w(64), w(80), k1)?;
    conv(&mut sd, "Conv2d_4a_3x3", w(80), w(192), k3)?;
    let mut cin = w(192);
    for (name, pool) in [("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)] {
        conv(&mut sd, &format!("{name}.branch1x1"), cin, w(64), k1)?;
        conv(&mut sd, &format!("{name}.branch5x5_1"), cin, w(48), k1)?;
        conv(&mut sd, &format!("{name}.branch5x5_2"), w(48), w(64), k5)?;
        conv(&mut sd, &format!("{name}.branch3x3dbl_1"), cin, w(64), k1)?;
        conv(&mut sd, &format!("{name}.branch3x3dbl_2"), w(64), w(96), k3)?;
        conv(&mut sd, &format!("{name}.branch3x3dbl_3"), w(96), w(96), k3)?;
        conv(&mut sd, &format!("{name}.branch_pool"), cin, w(pool), k1)?;
        cin = w(64) + w(64) + w(96) + w(pool);
    }
    conv(&mut sd, "Mixed_6a.branch3x3", cin, w(384), k3)?;
    conv(&mut sd, "Mixed_6a.branch3x3dbl_1", cin, w(64), k1)?;
    conv(&mut sd, "Mixed_6a.branch3x3dbl_2", w(64), w(96), k3)?;
    conv(&mut sd, "Mixed_6a.branch3x3dbl_3", w(96), w(96), k3)?;
    cin += w(384) + w(96);
    for (name, c7) in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)] {
        let (p, c7) = (name, w(c7));
        conv(&mut sd, &format!("{p}.branch1x1"), cin, w(192), k1)?;
        conv(&mut sd, &format!("{p}.branch7x7_1"), cin, c7, k1)?;
        conv(&mut sd, &format!("{p}.branch7x7_2"), c7, c7, k17)?;
        conv(&mut sd, &format!("{p}.branch7x7_3"), c7, w(192), k71)?;
        conv(&mut sd, &format!("{p}.branch7x7dbl_1"), cin, c7, k1)?;
        conv(&mut sd, &format!("{p}.branch7x7dbl_2"), c7, c7, k71)?;
        conv(&mut sd, &format!("{p}.branch7x7dbl_3"), c7, c7, k17)?;
        conv(&mut sd, &format!("{p}.branch7x7dbl_4"), c7, c7, k71)?;
        conv(&mut sd, &format!("{p}.branch7x7dbl_5"), c7, w(192), k17)?;
        conv(&mut sd, &format!("{p}.branch_pool"), cin, w(192), k1)?;
        cin = 4 * w(192);
    }
    conv(&mut sd, "Mixed_7a.branch3x3_1", cin, w(192), k1)?;
    conv(&mut sd, "Mixed_7a.branch3x3_2", w(192), w(320), k3)?;
    conv(&mut sd, "Mixed_7a.branch7x7x3_1", cin, w(192), k1)?;
    conv(&mut sd, "Mixed_7a.branch7x7x3_2", w(192), w(192), k17)?;
    conv(&mut sd, "Mixed_7a.branch7x7x3_3", w(192), w(192), k71)?;
    conv(&mut sd, "Mixed_7a.branch7x7x3_4", w(192), w(192), k3)?;
    cin += w(320) + w(192);
    for name in ["Mixed_7b", "Mixed_7c"] {
        let p = name;
        conv(&mut sd, &format!("{p}.branch1x1"), cin, w(320), k1)?;
        conv(&mut sd, &format!("{p}.branch3x3_1"), cin, w(384), k1)?;
        conv(&mut sd, &format!("{p}.branch3x3_2a"), w(384), w(384), k13)?;
        conv(&mut sd, &format!("{p}.branch3x3_2b"), w(384), w(384), k31)?;
        conv(&mut sd, &format!("{p}.branch3x3dbl_1"), cin, w(448), k1)?;
        conv(&mut sd, &format!("{p}.branch3x3dbl_2"), w(448), w(384), k3)?;
        conv(&mut sd, &format!("{p}.branch3x3dbl_3a"), w(384), w(384), k13)?;
        conv(&mut sd, &format!("{p}.branch3x3dbl_3b"), w(384), w(384), k31)?;
        conv(&mut sd, &format!("{p}.branch_pool"), cin, w(192), k1)?;
        cin = w(320) + 4 * w(384) + w(192);
    }
    sd.push(("fc.weight".into(), init.normal(&[w(1008), cin], (cin as f64).powf(-0.5))?));
    sd.push(("fc.bias".into(), Tensor::f_zeros([w(1008)], opts)?));
    Ok(sd)
}
