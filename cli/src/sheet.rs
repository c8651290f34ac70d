//! The contact sheet `clipshape edit` writes: the input, the reconstruction and every strength
//! side by side, each labelled. Labels use a built-in 5×7 pixel font so no font file is needed.

use clipshape::edit::render::save_png;
use clipshape::edit::PixelFormat;
use clipshape::error::{Error, Result};

/// Glyph rows, 5 bits each (MSB = leftmost), for the characters labels use.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0F, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        _ => [0x00; 7],
    }
}

/// Height of the label strip above each tile, px (glyphs are drawn at 2×).
const LABEL_H: usize = 20;
const SCALE: usize = 2;
const GAP: usize = 4;

/// One tile: RGB8 pixels and its label.
pub struct Tile<'a> {
    pub rgb: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub label: String,
}

/// Lays tiles out in one row (scaled to a common height) on white, labels in black above.
pub fn contact_sheet(tiles: &[Tile], height: usize) -> Result<(Vec<u8>, usize, usize)> {
    if tiles.is_empty() || height == 0 {
        return Err(Error::arg("tiles", "nothing to lay out"));
    }
    let widths: Vec<usize> = tiles.iter().map(|t| (t.width * height).div_ceil(t.height.max(1)).max(1)).collect();
    let w = widths.iter().sum::<usize>() + GAP * (tiles.len() + 1);
    let h = height + LABEL_H + 2 * GAP;
    let mut out = vec![255u8; w * h * 3];
    let mut x0 = GAP;
    for (tile, &tw) in tiles.iter().zip(&widths) {
        if tile.rgb.len() != tile.width * tile.height * 3 {
            return Err(Error::arg(
                "tiles",
                format!("tile `{}` has {} bytes for {}×{}", tile.label, tile.rgb.len(), tile.width, tile.height),
            ));
        }
        // Nearest-neighbour scaling: the sheet is for looking, the PNGs beside it are exact.
        for y in 0..height {
            let sy = y * tile.height / height;
            for x in 0..tw {
                let sx = (x * tile.width / tw).min(tile.width - 1);
                let src = (sy * tile.width + sx) * 3;
                let dst = ((GAP + LABEL_H + y) * w + x0 + x) * 3;
                out[dst..dst + 3].copy_from_slice(&tile.rgb[src..src + 3]);
            }
        }
        draw_text(&mut out, w, x0, GAP + 2, &tile.label, tw);
        x0 += tw + GAP;
    }
    Ok((out, w, h))
}

fn draw_text(buf: &mut [u8], w: usize, x0: usize, y0: usize, text: &str, max_w: usize) {
    let advance = 6 * SCALE;
    for (i, c) in text.chars().enumerate() {
        let cx = x0 + i * advance;
        if (i + 1) * advance > max_w {
            break;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let (x, y) = (cx + col * SCALE + dx, y0 + row * SCALE + dy);
                        let p = (y * w + x) * 3;
                        if p + 3 <= buf.len() {
                            buf[p..p + 3].copy_from_slice(&[0, 0, 0]);
                        }
                    }
                }
            }
        }
    }
}

/// Builds and writes the sheet as PNG, atomically.
pub fn write_contact_sheet(path: &std::path::Path, tiles: &[Tile], height: usize) -> Result<()> {
    let (px, w, h) = contact_sheet(tiles, height)?;
    save_png(path, &px, w as u32, h as u32, PixelFormat::Rgb8)
}

/// `k=+1.5`, `k=-3`, `k=0`.
pub fn strength_label(k: f64) -> String {
    let v = if k == k.trunc() { format!("{}", k.abs() as i64) } else { format!("{}", k.abs()) };
    match k.partial_cmp(&0.0) {
        Some(std::cmp::Ordering::Greater) => format!("k=+{v}"),
        Some(std::cmp::Ordering::Less) => format!("k=-{v}"),
        _ => "k=0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_drawn_and_tiles_placed() {
        let red = vec![[200u8, 0, 0]; 16 * 16].concat();
        let blue = vec![[0u8, 0, 200]; 32 * 16].concat();
        let tiles = [
            Tile { rgb: &red, width: 16, height: 16, label: "input".into() },
            Tile { rgb: &blue, width: 32, height: 16, label: strength_label(1.5) },
        ];
        let (px, w, h) = contact_sheet(&tiles, 32).unwrap();
        assert_eq!(h, 32 + LABEL_H + 2 * GAP);
        assert_eq!(w, 32 + 64 + 3 * GAP);
        let at = |x: usize, y: usize| &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(at(GAP + 5, GAP + LABEL_H + 5), &[200, 0, 0]);
        assert_eq!(at(GAP + 32 + GAP + 40, GAP + LABEL_H + 20), &[0, 0, 200]);
        let black = (0..w * (GAP + LABEL_H)).filter(|i| px[i * 3..i * 3 + 3] == [0, 0, 0]).count();
        assert!(black > 50, "label pixels drawn: {black}");
    }

    #[test]
    fn strength_labels() {
        assert_eq!(strength_label(1.5), "k=+1.5");
        assert_eq!(strength_label(-3.0), "k=-3");
        assert_eq!(strength_label(0.0), "k=0");
    }
}
