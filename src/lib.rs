//! libclipshape: text-driven shape editing of real photos.
//!
//! The method (PRMU 2022, after NaviGAN): invert a photo into StyleGAN2's W+ with e4e, learn a
//! shift `x` of ONE generator conv weight so that CLIP finds `G_{θ+x}(w)` closer to a prompt,
//! then render `G_{θ+k·x}(w)` at several strengths `k`.
//!
//! Module map:
//! - [`checkpoint`]: official `.pt` (zip/legacy pickle, TorchScript) and safetensors readers.
//! - [`models`]: one file per network (`stylegan2`), VarStore paths = checkpoint keys.
//! - [`ops`]: upfirdn2d, fused leaky ReLU, PixelNorm.
//! - [`edit`]: latents, shifts, rendering at strengths.
//! - [`context`]: the loaded model set on a device, what the C ABI hands out as `cs_ctx`.
//! - [`ffi`]: the C ABI, the crate's only `unsafe`.

pub mod checkpoint;
pub mod context;
pub mod device;
pub mod domain;
pub mod edit;
pub mod error;
pub mod face;
pub mod ffi;
pub mod imageops;
pub mod io;
pub mod layer;
pub mod memory;
pub mod models;
pub mod nn;
pub mod ops;
pub mod random;
pub mod store;
pub mod tokenizer;

pub use error::{Error, Result};

/// The crate version, also what shift files record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
