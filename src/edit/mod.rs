//! The method on top of the models: W+ latents, weight shifts and rendering at strengths.

pub mod encode;
pub mod eval;
pub mod guide;
pub mod latent;
pub mod loss;
pub mod optimize;
pub mod params;
pub mod probe;
pub mod render;
pub mod shard;
pub mod shift;

pub use latent::Latent;
pub use render::{render, to_rgba8, PixelFormat};
pub use shift::Shift;
