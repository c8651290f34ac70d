//! CLIP as the edit's guide: text features once per prompt, images from disk through the
//! official preprocessing, generator output through a differentiable path, and
//! `D_clip = 1 − cos(E_I(img), E_T(text))`.
//!
//! Generator output → CLIP input (decided in ARCHITECTURE.md, "CLIP input"): the [-1, 1] image
//! is mapped to CLIP's normalised space (mean/std, as CLIP was trained), letterboxed to a square
//! with zeros (= CLIP's mean colour, the least informative fill) so nothing is cropped — a
//! car's wheels sit at the left and right edges of its 512×384 frame — and resized with
//! antialiased bilinear filtering. StyleCLIP's Upsample×7 + AvgPool without normalisation is
//! kept as [`ImageFit::StyleClip`] for comparison.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::imageops::resize_bicubic;
use crate::io::check_finite;
use crate::models::clip::{self, Clip, HeadCounts, MEAN, STD};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// How a generator image of any size becomes CLIP's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFit {
    /// Normalise, pad to a square with CLIP's mean colour, antialiased resize.
    #[default]
    Letterbox,
    /// StyleCLIP: nearest Upsample×7, AvgPool(side/32), no normalisation (square input only).
    StyleClip,
}

/// Smallest picture side accepted for scoring.
pub const MIN_SIDE: usize = 8;

pub struct ClipGuide {
    pub clip: Clip,
    pub tokenizer: Tokenizer,
    pub fit: ImageFit,
}

impl From<TokenizerError> for Error {
    fn from(e: TokenizerError) -> Self {
        match e {
            TokenizerError::Io { path, source } => Error::Io { path, source },
            TokenizerError::CorruptVocab { path, reason } => Error::Format { path, reason },
            e @ (TokenizerError::EmptyPrompt | TokenizerError::TooLong { .. }) => Error::arg("prompt", e.to_string()),
        }
    }
}

impl ClipGuide {
    pub fn load(clip_path: &Path, vocab_path: &Path, heads: HeadCounts, device: Device) -> Result<ClipGuide> {
        let ck = Checkpoint::open(clip_path)?;
        let clip = Clip::load(&ck, "", heads, device)?;
        let tokenizer = Tokenizer::from_gz_file(vocab_path)?;
        if tokenizer.vocab_size() as i64 != clip.config.vocab_size {
            return Err(Error::Mismatch(format!(
                "vocab {} has {} tokens, CLIP model {} expects {}",
                vocab_path.display(),
                tokenizer.vocab_size(),
                clip_path.display(),
                clip.config.vocab_size
            )));
        }
        Ok(ClipGuide { clip, tokenizer, fit: ImageFit::default() })
    }

    pub fn device(&self) -> Device {
        self.clip.device()
    }

    /// Token ids (N, context) on the model's device. Over-long prompts are an error unless
    /// `truncate`: the user should know their text was cut.
    pub fn tokens(&self, texts: &[&str], truncate: bool) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::arg("prompt", "no text given"));
        }
        let mut ids = Vec::with_capacity(texts.len() * self.clip.config.context_length as usize);
        for t in texts {
            ids.extend(self.tokenizer.tokenize(t, truncate)?);
        }
        Ok(Tensor::from_slice(&ids).f_view([texts.len() as i64, -1])?.f_to_device(self.device())?)
    }

    /// Unit-length text features (N, embed_dim), computed without gradient.
    pub fn text_features(&self, texts: &[&str], truncate: bool) -> Result<Tensor> {
        let tokens = self.tokens(texts, truncate)?;
        tch::no_grad(|| clip::normalize(&self.clip.encode_text(&tokens)?))
    }

    /// Unit-length image features of CLIP-space inputs (B, 3, R, R).
    pub fn image_features(&self, x: &Tensor) -> Result<Tensor> {
        clip::normalize(&self.clip.encode_image(x)?)
    }

    /// Differentiable: generator output (B, 3, H, W) in [-1, 1] → CLIP input.
    pub fn generator_input(&self, img: &Tensor) -> Result<Tensor> {
        generator_to_clip(img, self.clip.image_resolution(), self.fit)
    }

    /// Cosine similarity of a picture (official preprocessing, alpha over mid-grey) to each text.
    pub fn score(&self, view: &crate::edit::encode::ImageView, texts: &[&str]) -> Result<Vec<f32>> {
        view.validate()?;
        let x = self.preprocess_rgb8(&view.rgb8_composited()?, view.width as usize, view.height as usize)?;
        let t = self.text_features(texts, false)?;
        let i = tch::no_grad(|| self.image_features(&x))?;
        Ok(Vec::<f32>::try_from(clip::cosine(&i, &t)?.f_to_kind(Kind::Float)?)?)
    }

    /// `clip._transform` of an RGB8 picture (rows packed): (1, 3, R, R) on the model's device.
    pub fn preprocess_rgb8(&self, rgb: &[u8], width: usize, height: usize) -> Result<Tensor> {
        preprocess_rgb8(rgb, width, height, self.clip.image_resolution() as usize)?
            .f_to_device(self.device())
            .map_err(Into::into)
    }
}

/// `1 − cos`, row by row (text features broadcast over the batch).
pub fn clip_distance(image_features: &Tensor, text_features: &Tensor) -> Result<Tensor> {
    Ok(clip::cosine(image_features, text_features)?.f_neg()?.f_add_scalar(1.0)?)
}

fn mean_std(device: Device) -> Result<(Tensor, Tensor)> {
    let m = Tensor::from_slice(&MEAN).f_to_kind(Kind::Float)?.f_view([1, 3, 1, 1])?.f_to_device(device)?;
    let s = Tensor::from_slice(&STD).f_to_kind(Kind::Float)?.f_view([1, 3, 1, 1])?.f_to_device(device)?;
    Ok((m, s))
}

/// Generator output (B, 3, H, W) in [-1, 1] → CLIP input (B, 3, n, n), differentiable.
pub fn generator_to_clip(img: &Tensor, n: i64, fit: ImageFit) -> Result<Tensor> {
    let (_, c, h, w) = img.size4()?;
    if c != 3 {
        return Err(Error::arg("image", format!("{c} channels, expected 3")));
    }
    match fit {
        ImageFit::Letterbox => {
            let (mean, std) = mean_std(img.device())?;
            let x = img.f_add_scalar(1.0)?.f_mul_scalar(0.5)?.f_sub(&mean)?.f_div(&std)?;
            let side = h.max(w);
            let (top, left) = ((side - h) / 2, (side - w) / 2);
            let x = if side != h || side != w {
                x.f_constant_pad_nd([left, side - w - left, top, side - h - top])?
            } else {
                x
            };
            if side == n {
                Ok(x)
            } else {
                Ok(x.f_internal_upsample_bilinear2d_aa([n, n], false, None, None)?)
            }
        }
        ImageFit::StyleClip => {
            if h != w || (h * 7) % n != 0 {
                return Err(Error::arg(
                    "image",
                    format!("StyleCLIP fit needs a square side divisible by {n}/7, got {h}×{w}"),
                ));
            }
            let k = h * 7 / n;
            let up = img.f_upsample_nearest2d([h * 7, w * 7], Some(7.0), Some(7.0))?;
            Ok(up.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)?)
        }
    }
}

/// `clip._transform`: bicubic resize of the short side to `n` (Pillow-exact), centre crop,
/// /255, mean/std. Returns (1, 3, n, n) on the CPU.
pub fn preprocess_rgb8(rgb: &[u8], width: usize, height: usize, n: usize) -> Result<Tensor> {
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(Error::arg(
            "image",
            format!("{width}×{height} is too small; each side needs at least {MIN_SIDE} pixels"),
        ));
    }
    if rgb.len() != width * height * 3 {
        return Err(Error::arg(
            "image",
            format!("{} bytes for a {width}×{height} RGB picture, expected {}", rgb.len(), width * height * 3),
        ));
    }
    // torchvision Resize(int): the short side becomes n, the long side int(n · long / short).
    let (rw, rh) = if width <= height {
        (n, (n as f64 * height as f64 / width as f64) as usize)
    } else {
        ((n as f64 * width as f64 / height as f64) as usize, n)
    };
    let resized = resize_bicubic(rgb, width, height, 3, rw, rh);
    // CenterCrop: Python's round (half to even).
    let top = ((rh - n) as f64 / 2.0).round_ties_even() as usize;
    let left = ((rw - n) as f64 / 2.0).round_ties_even() as usize;
    let mut crop = Vec::with_capacity(n * n * 3);
    for y in top..top + n {
        crop.extend_from_slice(&resized[(y * rw + left) * 3..(y * rw + left + n) * 3]);
    }
    let t = Tensor::from_slice(&crop)
        .f_view([1, n as i64, n as i64, 3])?
        .f_permute([0, 3, 1, 2])?
        .f_to_kind(Kind::Float)?;
    let (mean, std) = mean_std(Device::Cpu)?;
    Ok(t.f_div_scalar(255.0)?.f_sub(&mean)?.f_div(&std)?)
}

/// Rejects NaN/inf in float images fed to CLIP.
pub fn check_image(x: &Tensor) -> Result<()> {
    check_finite("image", x)
}
