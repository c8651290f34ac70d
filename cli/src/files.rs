//! The files a command reads: only regular files (a FIFO or a device would block or never
//! end), pictures decoded once (their size checked from the header first, their EXIF
//! orientation applied, a JPEG cut short refused), and memory asked for before it is used,
//! so a photo too large for this machine is an error naming it, not an abort.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clipshape::edit::encode::{MAX_PIXELS, MAX_SIDE};

/// Refuses anything but a regular file (after links): `what` names it in the message.
pub fn regular_file(path: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => bail!("{what} {}: is a folder, not a file", path.display()),
        Ok(_) => bail!("{what} {}: not a regular file (a pipe, socket or device): give a file", path.display()),
        Err(e) => Err(e).with_context(|| format!("{what} {}", path.display())),
    }
}

/// Decodes a picture (format from its bytes, not its name) to RGBA8, upright as its EXIF
/// orientation says (a phone's JPEG is often stored sideways). The header's dimensions are
/// checked first, so a tiny file that claims 20000² pixels costs nothing.
pub fn load_rgba(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    use image::ImageDecoder as _;
    regular_file(path, "picture")?;
    let reading = || format!("reading {}", path.display());
    let bytes = std::fs::read(path).with_context(reading)?;
    let reader =
        image::ImageReader::new(std::io::Cursor::new(&bytes[..])).with_guessed_format().with_context(reading)?;
    match reader.format() {
        None => bail!("{}: not a PNG or JPEG picture", path.display()),
        Some(image::ImageFormat::Jpeg) if jpeg_end(&bytes).is_none() => {
            bail!("{}: the JPEG ends early (its last scan has no end): the file is truncated", path.display())
        }
        _ => {}
    }
    let mut decoder = reader.into_decoder().with_context(reading)?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        bail!("{}: {w}×{h} px exceeds the limit ({MAX_SIDE} px a side, {MAX_PIXELS} px in all)", path.display());
    }
    // The decoded picture, its RGBA copy and a turned copy: asked for now, so a photo this
    // machine cannot hold is said before the decoder would abort on it.
    let need = decoder.total_bytes() as usize + 8 * w as usize * h as usize;
    clipshape::memory::ensure_available(need, || format!("reading the {w}×{h} px picture {}", path.display()))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).with_context(|| format!("decoding {}", path.display()))?;
    drop(bytes);
    img.apply_orientation(orientation);
    let img = img.into_rgba8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

/// Where a JPEG's image ends: just after its end-of-image marker, reached by walking its
/// segments and the entropy-coded data of its scans (an EXIF thumbnail's own end marker is
/// inside a segment and skipped). None when the data runs out first: the file was cut short.
/// Data after the end (a phone's motion photo appends its video) is not part of the picture.
pub fn jpeg_end(bytes: &[u8]) -> Option<usize> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return Some(i),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len = u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]) as usize;
                if len < 2 || i + len > bytes.len() {
                    return None;
                }
                i += len;
                if marker == 0xDA {
                    i = scan_end(bytes, i)?;
                }
            }
        }
    }
}

/// The end of a scan's entropy-coded data starting at `i`: the first marker that is neither
/// a stuffed byte (FF 00) nor a restart (FF D0–D7).
fn scan_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let ff = i + bytes.get(i..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(ff + 1)? {
            0x00 | 0xD0..=0xD7 => i = ff + 2,
            0xFF => i = ff + 1,
            _ => return Some(ff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jpeg_end;

    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(40, 24, |x, y| image::Rgb([(x * 6) as u8, (y * 10) as u8, 128]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).expect("encode");
        bytes
    }

    #[test]
    fn a_jpegs_end_is_found_through_its_segments_and_scans() {
        let whole = jpeg();
        assert_eq!(jpeg_end(&whole), Some(whole.len()));
        let mut with_video = whole.clone();
        with_video.extend(b"\x00\x00\x00\x18ftypmp42 the motion photo's video \xFF\xD8\xFF");
        assert_eq!(jpeg_end(&with_video), Some(whole.len()));
        for cut in [whole.len() - 2, whole.len() - 40, whole.len() / 2, 100] {
            assert_eq!(jpeg_end(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(jpeg_end(b"\x89PNG"), None);
    }
}
