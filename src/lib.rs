//! libclipshape: text-driven shape editing of real photos.
//!
//! The method (PRMU 2022, after NaviGAN): invert a photo into StyleGAN2's W+ with e4e, learn a
//! shift `x` of ONE generator conv weight so that CLIP finds `G_{θ+x}(w)` closer to a prompt,
//! then render `G_{θ+k·x}(w)` at several strengths `k`.
//!
//! Module map, from the bottom up (a module imports only from those above it in this list):
//! - [`error`], [`layer`] (the generator's layer names), [`domain`] (frames, encoder inputs),
//!   [`random`] (seeded numbers), [`io`] (atomic writes), [`memory`] (heap reuse, buffers that
//!   fail instead of aborting), [`pixels`] (a host's 8-bit pictures), [`engine`] (the libtorch
//!   loaded: its version, the GPU engine), [`device`], [`imageops`].
//! - [`checkpoint`]: official `.pt` (zip/legacy pickle, TorchScript) and safetensors readers.
//! - [`nn`], [`ops`]: layers on the strict loader; upfirdn2d, fused leaky ReLU, PixelNorm.
//! - [`models`]: one file per network, VarStore paths = checkpoint keys.
//! - [`tokenizer`]: CLIP's BPE.
//! - [`store`]: model sets (manifest, downloads, verification).
//! - [`face`]: detect → align → paste → flow and transfer, on photos.
//! - [`edit`]: latents, shifts, encode → optimise (loss terms, layer probe) → render, eval.
//! - [`context`]: the façade: a loaded model set on a device (what the C ABI hands out as
//!   `cs_ctx`), its photo path and the one builder of an edit's parameters.
//! - [`ffi`]: the C ABI, the crate's `unsafe` boundary (besides `memory`'s allocator calls and
//!   `engine`'s dlopen); it and the CLI call [`context`].

pub mod checkpoint;
pub mod context;
pub mod device;
pub mod domain;
pub mod edit;
pub mod engine;
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
pub mod pixels;
pub mod random;
pub mod store;
pub mod tokenizer;

pub use error::{Error, Result};

/// The crate version, also what shift files record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
