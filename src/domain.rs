//! What an image domain is, in one place: the generator's output size, the picture inside it
//! (the frame), what the e4e encoder is fed, how a photo is aligned first, and the editing
//! defaults. The manifest declares these for each model set; a context opened from bare files
//! infers them here from the files themselves.

use serde::{Deserialize, Serialize};

use crate::layer::LayerId;

/// Per-domain defaults of the editing method (`[sets.NAME.domain]` in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// "face", "car", "horse".
    pub name: String,
    /// Side of the square generator output, px.
    pub generator_size: u32,
    /// The picture inside the generator output (cars: rows 64..448 of 512²).
    pub frame: Frame,
    /// Size e4e is fed.
    pub encoder_input: Size,
    /// Alignment applied to a photo before encoding.
    pub align: Align,
    /// Generator conv whose raw weight gets the shift: `conv1` or `convs.N`.
    pub default_layer: LayerId,
    /// Weight of ‖x‖₂ in the loss.
    pub default_lambda2: f64,
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// A crop of the generator output, px.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

impl Frame {
    /// The whole `size`² output.
    pub fn square(size: u32) -> Frame {
        Frame { top: 0, left: 0, height: size, width: size }
    }

    /// The frame when no domain is given: an encoder trained at aspect 3:4 (e4e's cars, 192×256)
    /// means the 512×384 band of rows 64..448; everything else is the whole square.
    pub fn infer(size: u32, encoder_input: Option<Size>) -> Frame {
        match encoder_input {
            Some(s) if s.height * 4 == s.width * 3 => {
                let height = size * 3 / 4;
                Frame { top: (size - height) / 2, left: 0, height, width: size }
            }
            _ => Frame::square(size),
        }
    }

    /// The same frame in a `to`² picture of a `from`² output (a render stopped early).
    pub fn scaled(&self, from: u32, to: u32) -> Frame {
        let s = |v: u32| (v as u64 * to as u64 / from.max(1) as u64) as u32;
        Frame { top: s(self.top), left: s(self.left), height: s(self.height), width: s(self.width) }
    }

    /// The frame of (B, C, S, S) pictures (views, no copy).
    pub fn crop(&self, images: &tch::Tensor) -> crate::error::Result<tch::Tensor> {
        Ok(images.f_narrow(2, self.top as i64, self.height as i64)?.f_narrow(3, self.left as i64, self.width as i64)?)
    }

    pub fn fits(&self, size: u32) -> bool {
        self.height > 0 && self.width > 0 && self.top + self.height <= size && self.left + self.width <= size
    }
}

/// Height × width, px.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub height: u32,
    pub width: u32,
}

impl Size {
    /// The encoder input for an e4e `dataset_type` (its `opts`): cars were trained at 192×256,
    /// everything else (faces, horses, churches) at 256×256.
    pub fn encoder_input_for(dataset_type: Option<&str>) -> Size {
        match dataset_type {
            Some(t) if t.starts_with("cars") => Size { height: 192, width: 256 },
            _ => Size { height: 256, width: 256 },
        }
    }
}

/// Photo alignment before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// FFHQ landmark-based crop (faces).
    Ffhq,
    /// Resize/crop only.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_inferred_from_the_encoder_aspect() {
        let car = Frame::infer(512, Some(Size { height: 192, width: 256 }));
        assert_eq!(car, Frame { top: 64, left: 0, height: 384, width: 512 });
        assert_eq!(Frame::infer(1024, Some(Size { height: 256, width: 256 })), Frame::square(1024));
        assert_eq!(Frame::infer(256, None), Frame::square(256));
        assert!(car.fits(512) && !car.fits(256));
        assert_eq!(Size::encoder_input_for(Some("cars_encode")), Size { height: 192, width: 256 });
        assert_eq!(Size::encoder_input_for(None), Size { height: 256, width: 256 });
    }
}
