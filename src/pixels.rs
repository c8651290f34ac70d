//! 8-bit pixels as a host hands them over (a canvas, a selection, a decoded photo): a checked,
//! borrowed view with a stride and a byte order. Everything that reads a host's picture (the
//! encoder, face detection, the transfer) takes an [`ImageView`].

use crate::error::{Error, Result};
use crate::memory;

/// Byte order of 8-bit pixels crossing the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgba8,
    /// Krita's in-memory order.
    Bgra8,
    Rgb8,
}

impl PixelFormat {
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            _ => 4,
        }
    }
}

/// Smallest image side accepted: anything smaller carries no face to invert.
pub const MIN_SIDE: u32 = 8;
/// Largest image side accepted.
pub const MAX_SIDE: u32 = 16384;
/// Largest pixel count accepted (2^27, e.g. 16384×8192: 512 MiB of RGBA8 before conversion).
pub const MAX_PIXELS: u64 = 1 << 27;

/// Borrowed 8-bit pixels: `height` rows of `width` pixels, row `y` starting at byte `y·stride`.
/// Rows may carry padding after their `width·bpp` bytes; the last row needs none.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one row's start to the next (≥ width · bytes per pixel).
    pub stride: u32,
    pub format: PixelFormat,
}

impl<'a> ImageView<'a> {
    /// A checked view; every error names the offending field.
    pub fn new(data: &'a [u8], width: u32, height: u32, stride: u32, format: PixelFormat) -> Result<Self> {
        let view = ImageView { data, width, height, stride, format };
        view.validate()?;
        Ok(view)
    }

    /// A view of tightly packed rows (stride = width · bytes per pixel).
    pub fn packed(data: &'a [u8], width: u32, height: u32, format: PixelFormat) -> Result<Self> {
        let stride = (width as u64 * format.channels() as u64).min(u32::MAX as u64) as u32;
        Self::new(data, width, height, stride, format)
    }

    /// Bytes of one row without padding.
    pub fn row_bytes(&self) -> u64 {
        self.width as u64 * self.format.channels() as u64
    }

    /// Re-checks the fields (they are public, so a view may have been built without `new`).
    pub fn validate(&self) -> Result<()> {
        for (name, side) in [("width", self.width), ("height", self.height)] {
            if side < MIN_SIDE {
                return Err(Error::arg(name, format!("{side} px; images must be at least {MIN_SIDE}×{MIN_SIDE}")));
            }
            if side > MAX_SIDE {
                return Err(Error::arg(name, format!("{side} px exceeds the limit of {MAX_SIDE} px per side")));
            }
        }
        let pixels = self.width as u64 * self.height as u64;
        if pixels > MAX_PIXELS {
            return Err(Error::arg(
                "width, height",
                format!("{}×{} = {pixels} pixels exceeds the limit of {MAX_PIXELS} (2^27)", self.width, self.height),
            ));
        }
        let row = self.row_bytes();
        if (self.stride as u64) < row {
            return Err(Error::arg(
                "stride",
                format!(
                    "{} bytes is less than width × {} bytes per pixel = {row}",
                    self.stride,
                    self.format.channels()
                ),
            ));
        }
        let need = self.stride as u64 * (self.height as u64 - 1) + row;
        if (self.data.len() as u64) < need {
            return Err(Error::arg(
                "data",
                format!(
                    "{} bytes, a {}×{} {:?} image with stride {} needs at least {need}",
                    self.data.len(),
                    self.width,
                    self.height,
                    self.format,
                    self.stride
                ),
            ));
        }
        Ok(())
    }

    /// The box `[x1, y1, x2, y2)` of this picture as a view of the same bytes (no copy). The
    /// box must lie inside; the view is not validated (it may be smaller than a picture the
    /// library accepts).
    pub fn crop(&self, [x1, y1, x2, y2]: [usize; 4]) -> Result<ImageView<'a>> {
        let (w, h) = (self.width as usize, self.height as usize);
        if !(x1 < x2 && x2 <= w && y1 < y2 && y2 <= h) {
            return Err(Error::arg("box", format!("[{x1}, {y1}, {x2}, {y2}) is not inside the {w}×{h} picture")));
        }
        let start = y1 * self.stride as usize + x1 * self.format.channels();
        Ok(ImageView {
            data: &self.data[start..],
            width: (x2 - x1) as u32,
            height: (y2 - y1) as u32,
            stride: self.stride,
            format: self.format,
        })
    }

    /// Row `y` without its padding (`y` < height of a validated view).
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride as usize;
        &self.data[start..start + self.row_bytes() as usize]
    }

    /// The pixels without row padding, `height · width · bpp` bytes.
    pub fn packed_bytes(&self) -> Result<Vec<u8>> {
        let row = self.row_bytes() as usize;
        let mut out = memory::with_capacity(row * self.height as usize, || self.what("a copy"))?;
        for y in 0..self.height as usize {
            out.extend_from_slice(self.row(y));
        }
        Ok(out)
    }

    /// Packed RGB8 rows, alpha composited over the same mid-grey as the encoder's input
    /// (what CLIP's official preprocessing is fed).
    pub fn rgb8_composited(&self) -> Result<Vec<u8>> {
        let n = self.format.channels();
        let pixels = self.width as usize * self.height as usize;
        let mut out = memory::with_capacity(pixels * 3, || self.what("an RGB copy"))?;
        for y in 0..self.height as usize {
            for px in self.row(y).chunks_exact(n) {
                let (r, g, b) = match self.format {
                    PixelFormat::Bgra8 => (px[2], px[1], px[0]),
                    _ => (px[0], px[1], px[2]),
                };
                let a = if n == 4 { px[3] as f32 / 255.0 } else { 1.0 };
                for c in [r, g, b] {
                    out.push((c as f32 * a + 127.5 * (1.0 - a)).round() as u8);
                }
            }
        }
        Ok(out)
    }

    /// Whether every pixel is opaque (RGB8 always is).
    pub fn is_opaque(&self) -> bool {
        self.format == PixelFormat::Rgb8
            || (0..self.height as usize).all(|y| self.row(y).chunks_exact(4).all(|p| p[3] == 255))
    }

    fn what(&self, copy: &str) -> String {
        format!("{copy} of a {}×{} px picture", self.width, self.height)
    }
}
