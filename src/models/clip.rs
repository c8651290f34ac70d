//! CLIP — Radford et al., "Learning Transferable Visual Models From Natural Language
//! Supervision" (ICML 2021) — the ViT variants of openai/CLIP `clip/model.py` (`CLIP`,
//! `VisionTransformer`, `Transformer`, `ResidualAttentionBlock`, `QuickGELU`).
//!
//! Loads OpenAI's distribution files (TorchScript archives such as `ViT-B-32.pt`, read by the
//! crate's own zip+pickle reader, no JIT) and plain state dicts (`.pt` / `.safetensors`) with the
//! official key names. Sizes (B/32, B/16, L/14) come from the checkpoint's shapes. OpenAI ships
//! fp16 weights; they are converted to float32 on load because the edit backpropagates through
//! the image tower, where fp16 gradients underflow.
//!
//! Try: `clipshape score --clip ViT-B-32.pt photo.png "a wide face" "a thin face"`.

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, Loader};
use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};

/// CLIP's input normalisation (`clip._transform`).
pub const MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Architecture facts, read off a checkpoint's shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub embed_dim: i64,
    pub image_resolution: i64,
    pub vision_layers: i64,
    pub vision_width: i64,
    pub vision_patch_size: i64,
    pub vision_heads: i64,
    pub context_length: i64,
    pub vocab_size: i64,
    pub transformer_width: i64,
    pub transformer_layers: i64,
    pub transformer_heads: i64,
}

/// Head counts are not stored in the weights. Every released CLIP uses 64-wide heads
/// (`build_model`'s `width // 64`); other models must say theirs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeadCounts {
    pub vision: Option<i64>,
    pub text: Option<i64>,
}

impl Config {
    pub fn infer(ck: &Checkpoint, prefix: &str, heads: HeadCounts) -> Result<Config> {
        let unknown =
            |reason: String| Error::UnknownArchitecture { path: ck.path().to_path_buf(), model: "CLIP", reason };
        let shape = |key: &str| -> Result<Vec<i64>> {
            let full = format!("{prefix}{key}");
            ck.shape(&full).map(<[i64]>::to_vec).ok_or_else(|| unknown(format!("missing key `{full}`")))
        };
        if ck.contains(&format!("{prefix}visual.layer1.0.conv1.weight")) {
            return Err(unknown("a ResNet CLIP; only the ViT models (ViT-B/32, B/16, L/14) are supported".into()));
        }
        let conv1 = shape("visual.conv1.weight")?;
        let pos = shape("visual.positional_embedding")?;
        let proj = shape("visual.proj")?;
        let tok = shape("token_embedding.weight")?;
        let text_pos = shape("positional_embedding")?;
        let ln_final = shape("ln_final.weight")?;
        if conv1.len() != 4
            || pos.len() != 2
            || proj.len() != 2
            || tok.len() != 2
            || text_pos.len() != 2
            || ln_final.len() != 1
        {
            return Err(unknown(
                "unexpected ranks of conv1 / positional_embedding / proj / token_embedding / ln_final".into(),
            ));
        }
        let grid = ((pos[0] - 1) as f64).sqrt().round() as i64;
        if grid * grid + 1 != pos[0] {
            return Err(unknown(format!("visual.positional_embedding has {} rows, not a square grid + 1", pos[0])));
        }
        let count = |p: &str| {
            let mut n = 0;
            while ck.contains(&format!("{prefix}{p}.{n}.ln_1.weight")) {
                n += 1;
            }
            n
        };
        let width_heads = |width: i64, given: Option<i64>, which: &str| -> Result<i64> {
            let attn =
                if which == "vision" { "visual.transformer.resblocks.0.attn" } else { "transformer.resblocks.0.attn" };
            let rule = (width >= 64 && width % 64 == 0).then_some(width / 64);
            let Some(h) = given.or(rule).or_else(|| torchscript_heads(ck, attn)) else {
                return Err(unknown(format!(
                    "the {which} tower is {width} wide, not a multiple of 64, and the file does not record its head count: give it (--clip-{which}-heads)"
                )));
            };
            if h < 1 || width % h != 0 {
                return Err(unknown(format!("{h} heads do not divide the {which} width {width}")));
            }
            Ok(h)
        };
        let vision_width = conv1[0];
        let transformer_width = ln_final[0];
        Ok(Config {
            embed_dim: proj[1],
            image_resolution: grid * conv1[2],
            vision_layers: count("visual.transformer.resblocks"),
            vision_width,
            vision_patch_size: conv1[2],
            vision_heads: width_heads(vision_width, heads.vision, "vision")?,
            context_length: text_pos[0],
            vocab_size: tok[0],
            transformer_width,
            transformer_layers: count("transformer.resblocks"),
            transformer_heads: width_heads(transformer_width, heads.text, "text")?,
        })
    }
}

/// A TorchScript archive's traced `MultiheadAttention.forward` divides the width by the head
/// count held in a constant (`head_dim = torch.div(embed_dim, CONSTANTS.cN, ...)`): read it
/// for models whose width does not follow the 64-wide-head rule.
fn torchscript_heads(ck: &Checkpoint, attn_path: &str) -> Option<i64> {
    let mut node = ck.pickle_root()?;
    for part in attn_path.split('.') {
        node = node.get(part)?;
    }
    let crate::checkpoint::torch::Value::Object { class, .. } = node else { return None };
    let module = class.rsplit_once('.')?.0.replace('.', "/");
    let code = String::from_utf8(ck.archive_entry(&format!("code/{module}.py")).ok()??).ok()?;
    let re = regex::Regex::new(r"head_dim\s*=\s*torch\.div\(embed_dim,\s*CONSTANTS\.c(\d+)").ok()?;
    let index: usize = re.captures(&code)?.get(1)?.as_str().parse().ok()?;
    let constants = crate::checkpoint::torch::parse_pickle(&ck.archive_entry("constants.pkl").ok()??).ok()?;
    let t = constants.as_seq()?.get(index)?.as_tensor()?;
    if t.dtype != crate::checkpoint::torch::DType::I64 || !t.shape.is_empty() {
        return None;
    }
    // Constants keep their own storages under `constants/`, apart from the weights' `data/`.
    let bytes = ck.archive_entry(&format!("constants/{}", t.storage)).ok()??;
    let start = t.offset * 8;
    Some(i64::from_le_bytes(bytes.get(start..start + 8)?.try_into().ok()?))
}

/// `ResidualAttentionBlock`: pre-LN attention and a QuickGELU MLP. Runs batch-first (B, L, D);
/// the reference's (L, B, D) layout gives the same numbers.
struct ResidualAttentionBlock {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    ln_1: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    heads: i64,
}

impl ResidualAttentionBlock {
    fn new(l: &Loader, p: nn::Path, d: i64, heads: i64) -> Result<Self> {
        let attn = &p / "attn";
        Ok(ResidualAttentionBlock {
            in_proj_weight: l.tensor(&attn, "in_proj_weight", &[3 * d, d])?,
            in_proj_bias: l.tensor(&attn, "in_proj_bias", &[3 * d])?,
            out_proj: Linear::new(l, &(&attn / "out_proj"), d, d)?,
            ln_1: LayerNorm::new(l, &(&p / "ln_1"), d)?,
            c_fc: Linear::new(l, &(&p / "mlp" / "c_fc"), d, 4 * d)?,
            c_proj: Linear::new(l, &(&p / "mlp" / "c_proj"), 4 * d, d)?,
            ln_2: LayerNorm::new(l, &(&p / "ln_2"), d)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, n, d) = x.size3()?;
        let hd = d / self.heads;
        let h = self.ln_1.forward(x)?;
        let qkv = h
            .f_linear(&self.in_proj_weight, Some(&self.in_proj_bias))?
            .f_view([b, n, 3, self.heads, hd])?
            .f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
        let a = Tensor::f_scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, causal, None, false)?;
        let a = self.out_proj.forward(&a.f_transpose(1, 2)?.f_reshape([b, n, d])?)?;
        let x = x.f_add(&a)?;
        let h = self.c_fc.forward(&self.ln_2.forward(&x)?)?;
        let h = h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?; // QuickGELU
        Ok(x.f_add(&self.c_proj.forward(&h)?)?)
    }
}

/// `Transformer`: a stack of residual attention blocks.
struct Transformer {
    resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    fn new(l: &Loader, p: nn::Path, width: i64, layers: i64, heads: i64) -> Result<Self> {
        let resblocks = (0..layers)
            .map(|i| ResidualAttentionBlock::new(l, &p / "resblocks" / i, width, heads))
            .collect::<Result<_>>()?;
        Ok(Transformer { resblocks })
    }

    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for b in &self.resblocks {
            x = b.forward(&x, causal)?;
        }
        Ok(x)
    }
}

/// `VisionTransformer`: patches → class token + positions → transformer → projection.
struct VisionTransformer {
    conv1: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    transformer: Transformer,
    ln_post: LayerNorm,
    proj: Tensor,
    patch: i64,
    resolution: i64,
}

impl VisionTransformer {
    fn new(l: &Loader, p: nn::Path, c: &Config) -> Result<Self> {
        let w = c.vision_width;
        let grid = c.image_resolution / c.vision_patch_size;
        Ok(VisionTransformer {
            conv1: l.tensor(&(&p / "conv1"), "weight", &[w, 3, c.vision_patch_size, c.vision_patch_size])?,
            class_embedding: l.tensor(&p, "class_embedding", &[w])?,
            positional_embedding: l.tensor(&p, "positional_embedding", &[grid * grid + 1, w])?,
            ln_pre: LayerNorm::new(l, &(&p / "ln_pre"), w)?,
            transformer: Transformer::new(l, &p / "transformer", w, c.vision_layers, c.vision_heads)?,
            ln_post: LayerNorm::new(l, &(&p / "ln_post"), w)?,
            proj: l.tensor(&p, "proj", &[w, c.embed_dim])?,
            patch: c.vision_patch_size,
            resolution: c.image_resolution,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, _, _) = x.size4()?;
        let x = x.f_conv2d(&self.conv1, None::<Tensor>, [self.patch, self.patch], [0, 0], [1, 1], 1)?;
        let w = self.class_embedding.size()[0];
        let x = x.f_reshape([b, w, -1])?.f_permute([0, 2, 1])?;
        let cls = self.class_embedding.f_view([1, 1, w])?.f_expand([b, 1, w], false)?;
        let x = Tensor::f_cat(&[cls, x], 1)?.f_add(&self.positional_embedding)?;
        let x = self.ln_pre.forward(&x)?;
        let x = self.transformer.forward(&x, false)?;
        let x = self.ln_post.forward(&x.f_select(1, 0)?)?;
        Ok(x.f_matmul(&self.proj)?)
    }
}

/// `CLIP` (ViT), frozen.
pub struct Clip {
    pub config: Config,
    pub vs: nn::VarStore,
    visual: VisionTransformer,
    transformer: Transformer,
    token_embedding: Tensor,
    positional_embedding: Tensor,
    ln_final: LayerNorm,
    text_projection: Tensor,
    logit_scale: Tensor,
}

/// Scalars OpenAI's TorchScript archives carry beside the weights.
const JIT_EXTRAS: [&str; 3] = ["input_resolution", "context_length", "vocab_size"];

impl Clip {
    pub fn load(ck: &Checkpoint, prefix: &str, heads: HeadCounts, device: Device) -> Result<Clip> {
        let config = Config::infer(ck, prefix, heads)?;
        let l = Loader::new(ck, prefix, "CLIP");
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let t = config.transformer_width;
        let clip = Clip {
            visual: VisionTransformer::new(&l, &root / "visual", &config)?,
            transformer: Transformer::new(
                &l,
                &root / "transformer",
                t,
                config.transformer_layers,
                config.transformer_heads,
            )?,
            token_embedding: l.tensor(&(&root / "token_embedding"), "weight", &[config.vocab_size, t])?,
            positional_embedding: l.tensor(&root, "positional_embedding", &[config.context_length, t])?,
            ln_final: LayerNorm::new(&l, &(&root / "ln_final"), t)?,
            text_projection: l.tensor(&root, "text_projection", &[t, config.embed_dim])?,
            logit_scale: l.tensor(&root, "logit_scale", &[])?,
            config,
            vs,
        };
        // `attn_mask` is a plain tensor attribute of OpenAI's blocks (not a buffer): a scripted
        // archive may carry it; the causal mask is rebuilt here, so it is not needed.
        l.finish(|k| JIT_EXTRAS.contains(&k) || k.ends_with(".attn_mask"))?;
        Ok(clip)
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn image_resolution(&self) -> i64 {
        self.visual.resolution
    }

    /// `encode_image`: (B, 3, R, R) in CLIP's normalised input space → (B, embed_dim), not
    /// normalised. Differentiable with respect to the image.
    pub fn encode_image(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let r = self.visual.resolution;
        if s.len() != 4 || s[1] != 3 || s[2] != r || s[3] != r {
            return Err(Error::arg("image", format!("CLIP input has shape {s:?}, expected [B, 3, {r}, {r}]")));
        }
        self.visual.forward(x)
    }

    /// `encode_text`: token ids (B, context_length) int64 → (B, embed_dim), not normalised;
    /// the feature is taken at each row's end-of-text token (its largest id).
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor> {
        let s = tokens.size();
        if s.len() != 2 || s[1] != self.config.context_length {
            return Err(Error::arg("tokens", format!("shape {s:?}, expected [B, {}]", self.config.context_length)));
        }
        let b = s[0];
        let x =
            Tensor::f_embedding(&self.token_embedding, tokens, -1, false, false)?.f_add(&self.positional_embedding)?;
        let x = self.transformer.forward(&x, true)?;
        let x = self.ln_final.forward(&x)?;
        let eot = tokens.f_argmax(-1, false)?;
        let rows = Tensor::f_arange(b, (Kind::Int64, x.device()))?;
        let x = x.f_index(&[Some(rows), Some(eot)])?;
        Ok(x.f_matmul(&self.text_projection)?)
    }

    /// exp(logit_scale): what CLIP multiplies cosines by before a softmax (100 for OpenAI's).
    pub fn logit_scale(&self) -> Result<f64> {
        Ok(self.logit_scale.f_exp()?.f_double_value(&[])?)
    }

    /// `forward`: (logits_per_image, logits_per_text), cosine similarities × exp(logit_scale).
    pub fn logits(&self, images: &Tensor, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let i = normalize(&self.encode_image(images)?)?;
        let t = normalize(&self.encode_text(tokens)?)?;
        let per_image = i.f_matmul(&t.f_tr()?)?.f_mul(&self.logit_scale.f_exp()?)?;
        let per_text = per_image.f_tr()?;
        Ok((per_image, per_text))
    }
}

/// Unit-length rows.
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_div(&x.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?)?)
}

/// Cosine similarity of matching rows (or one row against many by broadcasting).
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(normalize(a)?.f_mul(&normalize(b)?)?.f_sum_dim_intlist([-1i64].as_slice(), false, None::<Kind>)?)
}

impl Config {
    /// OpenAI's ViT-B/32.
    pub fn vit_b32() -> Config {
        Config {
            embed_dim: 512,
            image_resolution: 224,
            vision_layers: 12,
            vision_width: 768,
            vision_patch_size: 32,
            vision_heads: 12,
            context_length: 77,
            vocab_size: 49408,
            transformer_width: 512,
            transformer_layers: 12,
            transformer_heads: 8,
        }
    }
}
