//! Finding faces: MTCNN's detector as facenet-pytorch 2.6.0 runs its nets
//! ([`crate::models::mtcnn`]) — `models/utils/detect_face.py` `detect_face` with the defaults of
//! `MTCNN(keep_all=True)` (timesler/facenet-pytorch @ 787da06).
//!
//! [`Mtcnn::detect`] reproduces `detect_face` step by step, including where it truncates or
//! floors coordinates and which NMS flavour it uses, because those details move boxes and
//! landmarks by whole pixels: an image pyramid (area resampling) through PNet, then RNet on 24²
//! and ONet on 48² area-resampled crops. The differences, each for speed with the same
//! numbers: the pyramid and the crops are resampled from the 8-bit pixels with exact integer
//! window sums from a summed-area table (what `interpolate(mode='area')` computes in float, bit
//! for bit while the sums stay below 2^24), so a crop costs its output size, not its area;
//! PNet runs on fixed-size channels-last tiles of each level (cache-sized activations, one set
//! of oneDNN kernels; see [`PNet::forward_tiles`]); all crops of a stage go through their net
//! as one batch; box bookkeeping runs in plain `f32` arithmetic in the order the reference's
//! tensor ops round. A 4000×3000 photo takes about 0.8 s on two cores (`clipshape bench --only
//! face`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::models::mtcnn::{ONet, PNet, RNet, ONET_SIDE, RNET_SIDE};

/// `MTCNN(min_face_size=20)`: the smallest face side, in photo pixels, the pyramid looks for.
pub const MIN_FACE_SIZE: f64 = 20.0;
/// `MTCNN(factor=0.709)`: ratio between consecutive pyramid scales (≈ 1/√2, area halves).
pub const PYRAMID_FACTOR: f64 = 0.709;
/// `MTCNN(thresholds=[0.6, 0.7, 0.7])`: face probability a window needs at each stage.
pub const THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.7];
/// PNet's receptive field and output stride (`generateBoundingBox`: cellsize 12, stride 2).
const CELL: f32 = 12.0;
const STRIDE: f32 = 2.0;
/// `(x − 127.5) · 0.0078125`: the nets' input normalisation (1/128, not 1/127.5).
const PIXEL_MEAN: f32 = 127.5;
const PIXEL_SCALE: f32 = 0.0078125;
/// Largest photo side accepted (as the encoder input path).
pub const MAX_SIDE: usize = 16384;
/// PNet output tile (rows, columns) for detection: small enough for its activations (~1.5 MB)
/// to stay in cache, narrow enough that padding the last tile of a level wastes little.
pub const PNET_TILE: (usize, usize) = (32, 128);
/// Tiles per PNet call: amortises the ~20 tensor ops of a call, a batch ~ one 32-row strip of
/// a 12 MP photo's first level.
const PNET_BATCH: usize = 8;
/// Largest photo given a summed-area table (12 bytes a pixel, as the reference's float copy
/// of the photo); bigger ones sum their windows directly.
const SAT_MAX_PIXELS: usize = 1 << 25;

/// One detected face, in photo pixel coordinates (facenet-pytorch's convention).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// ONet's face probability.
    pub score: f32,
    /// Left eye, right eye, nose, left mouth corner, right mouth corner, each [x, y]
    /// ("left" = on the image's left).
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// The three nets on one device.
pub struct Mtcnn {
    pub pnet: PNet,
    pub rnet: RNet,
    pub onet: ONet,
    device: Device,
}

/// A candidate box through the cascade: corners, score, and the regression the last net gave.
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// Borrowed packed RGB8 pixels.
#[derive(Clone, Copy)]
struct Rgb<'a> {
    data: &'a [u8],
    w: usize,
    h: usize,
}

/// The names MTCNN's three files (P-, R-, O-Net) go by: facenet-pytorch's, and the model
/// store's (fetched with the `ffhq` set).
pub const FILE_NAMES: [[&str; 3]; 2] =
    [["pnet.pt", "rnet.pt", "onet.pt"], ["mtcnn_pnet.pt", "mtcnn_rnet.pt", "mtcnn_onet.pt"]];

/// MTCNN's three files in `dir` under either naming of [`FILE_NAMES`], when all three are there.
pub fn files_in(dir: &Path) -> Option<[PathBuf; 3]> {
    FILE_NAMES.into_iter().map(|names| names.map(|n| dir.join(n))).find(|files| files.iter().all(|f| f.is_file()))
}

impl Mtcnn {
    pub fn load(pnet: &Path, rnet: &Path, onet: &Path, device: Device) -> Result<Mtcnn> {
        Ok(Mtcnn {
            pnet: PNet::load(&Checkpoint::open(pnet)?, device)?,
            rnet: RNet::load(&Checkpoint::open(rnet)?, device)?,
            onet: ONet::load(&Checkpoint::open(onet)?, device)?,
            device,
        })
    }

    /// `dir/pnet.pt`, `dir/rnet.pt`, `dir/onet.pt` (facenet-pytorch's file names).
    pub fn load_dir(dir: &Path, device: Device) -> Result<Mtcnn> {
        let [p, r, o] = files_in(dir).unwrap_or_else(|| FILE_NAMES[0].map(|n| dir.join(n)));
        Self::load(&p, &r, &o, device)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// All faces of at least [`MIN_FACE_SIZE`] pixels in packed RGB8 pixels, most probable
    /// first (`MTCNN(select_largest=True)` would order by area; [`crate::face::pick_face`]
    /// picks the largest). A photo whose shorter side is under 20 px has no pyramid level,
    /// hence no faces.
    pub fn detect(&self, rgb: &[u8], width: usize, height: usize) -> Result<Vec<Face>> {
        self.detect_cancellable(rgb, width, height, &|| false)
    }

    /// [`Mtcnn::detect`], asking `cancelled` between PNet batches and stages (a 12 MP photo
    /// takes about a second).
    pub fn detect_cancellable(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Face>> {
        let check = || if cancelled() { Err(Error::Cancelled) } else { Ok(()) };
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(Error::arg(
                "width/height",
                format!("{width}×{height}; each side must be within 1..={MAX_SIDE}"),
            ));
        }
        let want = width * height * 3;
        if rgb.len() != want {
            return Err(Error::arg(
                "rgb",
                format!("{} bytes for a {width}×{height} RGB8 image, expected {want}", rgb.len()),
            ));
        }
        let _guard = tch::no_grad_guard();
        let t0 = Instant::now();
        let sums = Sums::new(Rgb { data: rgb, w: width, h: height });
        log::debug!("mtcnn window sums: {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
        let cands = self.stage1(&sums, cancelled)?;
        check()?;
        let (n1, t1) = (cands.len(), Instant::now());
        let cands = self.stage2(&sums, cands)?;
        check()?;
        let (n2, t2) = (cands.len(), Instant::now());
        let mut faces = self.stage3(&sums, cands)?;
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        log::debug!(
            "mtcnn {width}×{height}: PNet {n1} boxes in {:.0} ms, RNet {n2} in {:.0} ms, ONet {} faces in {:.0} ms",
            ms(t0, t1),
            ms(t1, t2),
            faces.len(),
            ms(t2, Instant::now())
        );
        Ok(faces)
    }

    /// PNet over the pyramid, NMS 0.5 per scale then 0.7 across scales, regression (without
    /// the +1 of `bbreg`, as the reference does here) and squaring.
    ///
    /// Each level runs in tiles of [`PNET_TILE`] outputs through [`PNet::forward_tiles`]
    /// (zero padding past the level's edge), [`PNET_BATCH`] tiles a call: the values are the
    /// whole level's, while the activations stay in cache (2–3× faster on a 12 MP photo, whose
    /// whole-level activations are hundreds of MB), and every call has the same shape, so
    /// oneDNN builds its conv kernels once (each new shape costs a 10–50 ms JIT, ~0.5 s for a
    /// pyramid of shapes). Level pixels are made per tile, channels-last.
    fn stage1(&self, sums: &Sums, cancelled: &dyn Fn() -> bool) -> Result<Vec<Cand>> {
        let (w, h) = (sums.w(), sums.h());
        let (th, tw) = PNET_TILE;
        let (ih, iw) = (2 * th + 10, 2 * tw + 10);
        let per = ih * iw * 3;
        struct Level {
            scale: f64,
            hs: usize,
            ws: usize,
            oh: usize,
            ow: usize,
        }
        let levels: Vec<Level> = pyramid_scales(w, h)
            .into_iter()
            .map(|scale| {
                // int(h * scale + 1): the reference's size, in double precision, truncated.
                let hs = (h as f64 * scale + 1.0) as usize;
                let ws = (w as f64 * scale + 1.0) as usize;
                Level { scale, hs, ws, oh: (hs - 1) / 2 - 4, ow: (ws - 1) / 2 - 4 }
            })
            .collect();
        // (level, output row, output column) of every tile, all levels in one queue so that
        // every batch is full (and so of one shape) but the last.
        let jobs: Vec<(usize, usize, usize)> = levels
            .iter()
            .enumerate()
            .flat_map(|(l, lv)| {
                (0..lv.oh).step_by(th).flat_map(move |i0| (0..lv.ow).step_by(tw).map(move |j0| (l, i0, j0)))
            })
            .collect();
        let mut cands: Vec<Vec<(usize, Cand)>> = levels.iter().map(|_| Vec::new()).collect();
        let mut data = vec![0f32; PNET_BATCH * per];
        let mut resize_s = 0.0;
        for batch in jobs.chunks(PNET_BATCH) {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let t = Instant::now();
            data.iter_mut().for_each(|v| *v = 0.0);
            // Unused batch slots stay zero and count as whole tiles; their outputs are ignored.
            let mut valid = vec![(ih as i64, iw as i64); PNET_BATCH];
            for (b, &(l, i0, j0)) in batch.iter().enumerate() {
                let lv = &levels[l];
                let rows = 2 * i0..(2 * i0 + ih).min(lv.hs);
                let cols = 2 * j0..(2 * j0 + iw).min(lv.ws);
                valid[b] = (rows.len() as i64, cols.len() as i64);
                sums.resize([0, 0, w, h], lv.hs, lv.ws, rows, cols, iw, &mut data[b * per..(b + 1) * per]);
            }
            resize_s += t.elapsed().as_secs_f64();
            let x = Tensor::f_from_slice(&data)?
                .f_view([PNET_BATCH as i64, ih as i64, iw as i64, 3])?
                .f_to_device(self.device)?
                .f_permute([0, 3, 1, 2])?;
            let (reg, prob) = self.pnet.forward_tiles(&x, &valid)?;
            let n = th * tw;
            let (prob, reg) = (to_vec(&prob)?, to_vec(&reg)?);
            if prob.len() != PNET_BATCH * 2 * n || reg.len() != PNET_BATCH * 4 * n {
                return Err(Error::Internal(format!(
                    "PNet tiles gave {} values, expected {}",
                    prob.len(),
                    PNET_BATCH * 2 * n
                )));
            }
            for (b, &(l, i0, j0)) in batch.iter().enumerate() {
                let lv = &levels[l];
                let s = lv.scale as f32;
                let (vi, vj) = (th.min(lv.oh - i0), tw.min(lv.ow - j0));
                let (face, reg) = (&prob[(2 * b + 1) * n..(2 * b + 2) * n], &reg[4 * b * n..4 * (b + 1) * n]);
                for (k, &p) in face.iter().enumerate() {
                    let (ki, kj) = (k / tw, k % tw);
                    // `probs >= thresh`, the one inclusive threshold of the three.
                    if p >= THRESHOLDS[0] && ki < vi && kj < vj {
                        let (y, x) = (i0 + ki, j0 + kj);
                        let q1 = |v: usize| ((STRIDE * v as f32 + 1.0) / s).floor();
                        let q2 = |v: usize| ((STRIDE * v as f32 + CELL) / s).floor();
                        let r = |c: usize| reg[c * n + k];
                        let b = [q1(x), q1(y), q2(x), q2(y)];
                        cands[l].push((y * lv.ow + x, Cand { b, score: p, reg: [r(0), r(1), r(2), r(3)] }));
                    }
                }
            }
        }
        let mut all = Vec::new();
        for mut level in cands {
            // The reference's order (`mask.nonzero()`: row-major), which decides score ties.
            level.sort_by_key(|c| c.0);
            let level: Vec<Cand> = level.into_iter().map(|c| c.1).collect();
            all.extend(nms_iou(&level, 0.5).into_iter().map(|i| level[i]));
        }
        log::debug!(
            "mtcnn pyramid: {} levels, {} PNet tiles, {:.0} ms resampling, {} boxes",
            levels.len(),
            jobs.len(),
            resize_s * 1e3,
            all.len()
        );
        let mut out: Vec<Cand> = nms_iou(&all, 0.7).into_iter().map(|i| all[i]).collect();
        for c in &mut out {
            let (w, h) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [c.b[0] + c.reg[0] * w, c.b[1] + c.reg[1] * h, c.b[2] + c.reg[2] * w, c.b[3] + c.reg[3] * h];
            rerec(&mut c.b);
        }
        Ok(out)
    }

    /// RNet on 24² crops: threshold, NMS 0.7, `bbreg`, squaring.
    fn stage2(&self, sums: &Sums, cands: Vec<Cand>) -> Result<Vec<Cand>> {
        let t = Instant::now();
        let (cands, batch) = self.crops(sums, cands, RNET_SIDE)?;
        if cands.is_empty() {
            return Ok(cands);
        }
        let t1 = Instant::now();
        let (reg, prob) = self.rnet.forward(&batch)?;
        let (reg, prob) = (to_vec(&reg)?, to_vec(&prob)?);
        log::debug!(
            "mtcnn RNet: crops {:.0} ms, net {:.0} ms",
            (t1 - t).as_secs_f64() * 1e3,
            t1.elapsed().as_secs_f64() * 1e3
        );
        let kept: Vec<Cand> = cands
            .iter()
            .enumerate()
            .filter(|(i, _)| prob[2 * i + 1] > THRESHOLDS[1])
            .map(|(i, c)| Cand {
                b: c.b,
                score: prob[2 * i + 1],
                reg: [reg[4 * i], reg[4 * i + 1], reg[4 * i + 2], reg[4 * i + 3]],
            })
            .collect();
        let mut out: Vec<Cand> = nms_iou(&kept, 0.7).into_iter().map(|i| kept[i]).collect();
        for c in &mut out {
            bbreg(&mut c.b, &c.reg);
            rerec(&mut c.b);
        }
        Ok(out)
    }

    /// ONet on 48² crops: threshold, landmarks relative to the (unregressed) box, `bbreg`, then
    /// NMS 0.7 by the smaller area ('Min').
    fn stage3(&self, sums: &Sums, cands: Vec<Cand>) -> Result<Vec<Face>> {
        let (cands, batch) = self.crops(sums, cands, ONET_SIDE)?;
        if cands.is_empty() {
            return Ok(Vec::new());
        }
        let (reg, lm, prob) = self.onet.forward(&batch)?;
        let (reg, lm, prob) = (to_vec(&reg)?, to_vec(&lm)?, to_vec(&prob)?);
        let mut faces = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            let score = prob[2 * i + 1];
            if score <= THRESHOLDS[2] {
                continue;
            }
            let [x1, y1, x2, y2] = c.b;
            let (w, h) = (x2 - x1 + 1.0, y2 - y1 + 1.0);
            let mut landmarks = [[0f32; 2]; 5];
            for (k, p) in landmarks.iter_mut().enumerate() {
                *p = [w * lm[10 * i + k] + x1 - 1.0, h * lm[10 * i + 5 + k] + y1 - 1.0];
            }
            let mut b = c.b;
            bbreg(&mut b, &[reg[4 * i], reg[4 * i + 1], reg[4 * i + 2], reg[4 * i + 3]]);
            faces.push(Face { bbox: b, score, landmarks });
        }
        let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
        let scores: Vec<f32> = faces.iter().map(|f| f.score).collect();
        Ok(nms_min(&boxes, &scores, 0.7).into_iter().map(|i| faces[i]).collect())
    }

    /// `pad` + crop + area resize to side², normalised, as one (N, 3, side, side) batch. Boxes
    /// whose clipped crop is empty are dropped (the reference would misalign its arrays there).
    fn crops(&self, sums: &Sums, cands: Vec<Cand>, side: usize) -> Result<(Vec<Cand>, Tensor)> {
        let per = 3 * side * side;
        let mut kept = Vec::with_capacity(cands.len());
        let mut data = Vec::with_capacity(cands.len() * per);
        for c in cands {
            let [x, y, ex, ey] = pad(&c.b, sums.w(), sums.h());
            if ey > y - 1 && ex > x - 1 {
                let start = data.len();
                data.resize(start + per, 0.0);
                let (x0, y0) = ((x - 1) as usize, (y - 1) as usize);
                sums.resize(
                    [x0, y0, ex as usize - x0, ey as usize - y0],
                    side,
                    side,
                    0..side,
                    0..side,
                    side,
                    &mut data[start..],
                );
                kept.push(c);
            }
        }
        let s = side as i64;
        let batch = Tensor::f_from_slice(&data)?
            .f_view([kept.len() as i64, s, s, 3])?
            .f_to_device(self.device)?
            .f_permute([0, 3, 1, 2])?;
        Ok((kept, batch))
    }
}

/// The pyramid scales `detect_face` builds: 12/min_face_size, times 0.709 while the shorter
/// side stays ≥ 12 pixels (double precision, as Python computes them).
pub fn pyramid_scales(width: usize, height: usize) -> Vec<f64> {
    let m = 12.0 / MIN_FACE_SIZE;
    let mut minl = width.min(height) as f64 * m;
    let mut scale = m;
    let mut scales = Vec::new();
    while minl >= 12.0 {
        scales.push(scale);
        scale *= PYRAMID_FACTOR;
        minl *= PYRAMID_FACTOR;
    }
    scales
}

/// A contiguous CPU copy of a float tensor's values.
fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?;
    Ok(Vec::<f32>::try_from(&t)?)
}

/// `rerec`: squares a box around its centre on its longer side.
fn rerec(b: &mut [f32; 4]) {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    b[0] = b[0] + w * 0.5 - l * 0.5;
    b[1] = b[1] + h * 0.5 - l * 0.5;
    b[2] = b[0] + l;
    b[3] = b[1] + l;
}

/// `bbreg`: the regression as fractions of the inclusive box size (+1).
fn bbreg(b: &mut [f32; 4], reg: &[f32; 4]) {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    *b = [b[0] + reg[0] * w, b[1] + reg[1] * h, b[2] + reg[2] * w, b[3] + reg[3] * h];
}

/// `pad`: corners truncated toward zero, then clamped to [1, w] × [1, h] (1-based, inclusive
/// end): the crop is rows y−1..ey, columns x−1..ex. Returns [x, y, ex, ey].
fn pad(b: &[f32; 4], w: usize, h: usize) -> [i64; 4] {
    // `.trunc().int()`; `as` saturates where int32 would wrap, for boxes no photo produces.
    let t = |v: f32| v.trunc() as i32 as i64;
    [t(b[0]).max(1), t(b[1]).max(1), t(b[2]).min(w as i64), t(b[3]).min(h as i64)]
}

/// torchvision `nms`: greedy by descending score (stable for ties), suppressing IoU > thr
/// with areas (x2 − x1)·(y2 − y1). Returns indices in pick order.
fn nms_iou(cands: &[Cand], thr: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&a, &b| cands[b].score.total_cmp(&cands[a].score));
    let area = |c: &Cand| (c.b[2] - c.b[0]) * (c.b[3] - c.b[1]);
    let mut suppressed = vec![false; cands.len()];
    let mut keep = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let (bi, ai) = (&cands[i].b, area(&cands[i]));
        for &j in &order[n + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &cands[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (ai + area(&cands[j]) - inter);
            if iou as f64 > thr {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// facenet-pytorch `nms_numpy(..., 'Min')`: inclusive areas (+1), overlap = intersection over
/// the smaller area, kept while ≤ thr; highest score first.
fn nms_min(boxes: &[[f32; 4]], scores: &[f32], thr: f32) -> Vec<usize> {
    let area: Vec<f32> = boxes.iter().map(|b| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)).collect();
    // np.argsort ascending, taking the last: the best first.
    let mut rest: Vec<usize> = (0..boxes.len()).collect();
    rest.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut pick = Vec::new();
    while let Some(i) = rest.pop() {
        pick.push(i);
        let bi = &boxes[i];
        rest.retain(|&j| {
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            w * h / area[i].min(area[j]) <= thr
        });
    }
    pick
}

/// torch `adaptive_avg_pool2d`'s window along one axis for output index `i`: [⌊i·n/m⌋, ⌈(i+1)·n/m⌉),
/// with the quotient in float as ATen computes it.
fn window(i: usize, out: usize, inp: usize) -> (usize, usize) {
    let a = ((i * inp) as f32 / out as f32).floor() as usize;
    let b = (((i + 1) * inp) as f32 / out as f32).ceil() as usize;
    (a.min(inp.saturating_sub(1)), b.clamp(a + 1, inp))
}

/// Window sums of the photo for `interpolate(mode='area')`: a summed-area table (u32 with
/// wrapping arithmetic, exact for any window whose sum is below 2^32, i.e. under 16.8 M
/// pixels), so a crop costs its output size, not its area; or, for huge photos, the pixels.
enum Sums<'a> {
    Table { w: usize, h: usize, sat: Vec<u32> },
    Direct(Rgb<'a>),
}

impl<'a> Sums<'a> {
    fn new(img: Rgb<'a>) -> Sums<'a> {
        if img.w * img.h > SAT_MAX_PIXELS {
            return Sums::Direct(img);
        }
        let stride = (img.w + 1) * 3;
        let mut sat = vec![0u32; (img.h + 1) * stride];
        // Single-threaded on purpose: it is memory-bound, and libtorch's OpenMP workers are
        // still spinning on the other cores between ops (measured: two threads were slower).
        for y in 0..img.h {
            let mut run = [0u32; 3];
            let (above, below) = sat.split_at_mut((y + 1) * stride);
            let above = &above[y * stride..];
            let row = &img.data[y * img.w * 3..(y + 1) * img.w * 3];
            for x in 0..img.w {
                for c in 0..3 {
                    run[c] = run[c].wrapping_add(row[x * 3 + c] as u32);
                    let i = (x + 1) * 3 + c;
                    below[i] = above[i].wrapping_add(run[c]);
                }
            }
        }
        Sums::Table { w: img.w, h: img.h, sat }
    }

    fn w(&self) -> usize {
        match self {
            Sums::Table { w, .. } => *w,
            Sums::Direct(img) => img.w,
        }
    }

    fn h(&self) -> usize {
        match self {
            Sums::Table { h, .. } => *h,
            Sums::Direct(img) => img.h,
        }
    }

    /// The window `rows` × `cols` of `interpolate(crop, (oh, ow), mode='area')` of `rect` =
    /// [x, y, w, h], normalised for the nets, channels-last into `out` with `stride` pixels a
    /// row. The mean is `sum / kh / kw` in float, the division order ATen uses.
    #[allow(clippy::too_many_arguments)]
    fn resize(
        &self,
        rect: [usize; 4],
        oh: usize,
        ow: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        stride: usize,
        out: &mut [f32],
    ) {
        let [x0, y0, cw, ch] = rect;
        let n = cols.len();
        let cols: Vec<(usize, usize)> = cols.map(|j| window(j, ow, cw)).collect();
        let norm = |sum: u32, kh: f32, kw: f32| (sum as f32 / kh / kw - PIXEL_MEAN) * PIXEL_SCALE;
        let first = rows.start;
        match self {
            Sums::Table { w, sat, .. } => {
                let sat_row = (w + 1) * 3;
                for i in rows {
                    let (r0, r1) = window(i, oh, ch);
                    let (top, bottom) = (&sat[(y0 + r0) * sat_row..], &sat[(y0 + r1) * sat_row..]);
                    let kh = (r1 - r0) as f32;
                    let o = &mut out[(i - first) * stride * 3..((i - first) * stride + n) * 3];
                    for (px, &(c0, c1)) in o.chunks_exact_mut(3).zip(&cols) {
                        let (a, b) = ((x0 + c0) * 3, (x0 + c1) * 3);
                        for c in 0..3 {
                            let sum = bottom[b + c]
                                .wrapping_sub(bottom[a + c])
                                .wrapping_sub(top[b + c])
                                .wrapping_add(top[a + c]);
                            px[c] = norm(sum, kh, (c1 - c0) as f32);
                        }
                    }
                }
            }
            Sums::Direct(img) => {
                let mut acc = vec![0u32; cw * 3];
                for i in rows {
                    let (r0, r1) = window(i, oh, ch);
                    acc.iter_mut().for_each(|a| *a = 0);
                    for r in r0..r1 {
                        let start = ((y0 + r) * img.w + x0) * 3;
                        for (a, &p) in acc.iter_mut().zip(&img.data[start..start + cw * 3]) {
                            *a += p as u32;
                        }
                    }
                    let kh = (r1 - r0) as f32;
                    let o = &mut out[(i - first) * stride * 3..((i - first) * stride + n) * 3];
                    for (px, &(c0, c1)) in o.chunks_exact_mut(3).zip(&cols) {
                        let mut s = [0u32; 3];
                        for p in acc[c0 * 3..c1 * 3].chunks_exact(3) {
                            s[0] += p[0];
                            s[1] += p[1];
                            s[2] += p[2];
                        }
                        for c in 0..3 {
                            px[c] = norm(s[c], kh, (c1 - c0) as f32);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_matches_the_reference_loop() {
        // 512²: 12/20 · 512 = 307.2 ≥ 12, …, stops once below 12: 10 scales.
        let s = pyramid_scales(512, 512);
        assert_eq!(s.len(), 10);
        assert!((s[0] - 0.6).abs() < 1e-15 && (s[1] - 0.6 * 0.709).abs() < 1e-15);
        assert!(pyramid_scales(19, 400).is_empty(), "a 19 px side has no level");
        assert_eq!(pyramid_scales(20, 20).len(), 1);
    }

    #[test]
    fn area_windows_cover_and_match_torch() {
        // Downscale: disjoint windows; upscale: 1-2 pixel windows.
        assert_eq!(window(0, 3, 9), (0, 3));
        assert_eq!(window(2, 3, 9), (6, 9));
        assert_eq!(window(0, 24, 10), (0, 1));
        assert_eq!(window(1, 24, 10), (0, 1));
        assert_eq!(window(2, 24, 10), (0, 2));
        assert_eq!(window(23, 24, 10), (9, 10));
        for (o, n) in [(7, 31), (24, 5), (48, 48), (13, 100)] {
            let mut prev_end = 0;
            for i in 0..o {
                let (a, b) = window(i, o, n);
                assert!(a < b && b <= n && a <= prev_end, "{o}←{n} window {i}: {a}..{b}");
                prev_end = b;
            }
            assert_eq!(prev_end, n);
        }
    }

    #[test]
    fn area_resize_averages_exactly() {
        // 4×2 image, channel values 0..; 2×1 output averages 2×2 blocks.
        let data: Vec<u8> = (0..4 * 2 * 3).map(|i| (i * 10) as u8).collect();
        let img = Rgb { data: &data, w: 4, h: 2 };
        for sums in [Sums::new(img), Sums::Direct(img)] {
            let mut out = vec![0f32; 3 * 2];
            sums.resize([0, 0, 4, 2], 1, 2, 0..1, 0..2, 2, &mut out);
            // Red of block 0: pixels (0,0),(1,0),(0,1),(1,1) = 0, 30, 120, 150 → 75.
            assert_eq!(out[0], (75.0 - 127.5) * 0.0078125);
            // Green of block 1: 70, 100, 190, 220 → 145.
            assert_eq!(out[3 + 1], (145.0 - 127.5) * 0.0078125);
        }
    }

    #[test]
    fn the_table_and_direct_sums_agree_on_crops_and_strips() {
        let (w, h) = (53, 41);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 131 + i / 3) % 256) as u8).collect();
        let img = Rgb { data: &data, w, h };
        let (table, direct) = (Sums::new(img), Sums::Direct(img));
        assert!(matches!(table, Sums::Table { .. }));
        // The table is the plain definition.
        if let Sums::Table { sat, .. } = &table {
            let at = |y: usize, x: usize, c: usize| sat[(y * (w + 1) + x) * 3 + c];
            for (y, x) in [(h, w), (17, 30), (40, 1), (21, 52)] {
                let data = &data;
                let want: u32 = (0..y).flat_map(|r| (0..x).map(move |q| data[(r * w + q) * 3 + 1] as u32)).sum();
                assert_eq!(at(y, x, 1), want, "S({y}, {x})");
            }
        }
        for (rect, oh, ow, rows, cols) in [
            ([0, 0, w, h], 25, 32, 0..25, 0..32),
            ([0, 0, w, h], 25, 32, 6..17, 3..30),
            ([7, 3, 5, 30], 24, 24, 0..24, 0..24),
            ([10, 9, 40, 31], 12, 12, 0..12, 0..12),
        ] {
            let n = rows.len() * cols.len() * 3;
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            let stride = cols.len();
            table.resize(rect, oh, ow, rows.clone(), cols.clone(), stride, &mut a);
            direct.resize(rect, oh, ow, rows, cols, stride, &mut b);
            assert_eq!(a, b, "{rect:?} → {oh}×{ow}");
        }
        // A window of the resize is that part of the whole resize.
        let mut whole = vec![0f32; 25 * 32 * 3];
        let mut part = vec![0f32; 11 * 27 * 3];
        table.resize([0, 0, w, h], 25, 32, 0..25, 0..32, 32, &mut whole);
        table.resize([0, 0, w, h], 25, 32, 6..17, 3..30, 27, &mut part);
        for i in 0..11 {
            assert_eq!(part[i * 27 * 3..(i + 1) * 27 * 3], whole[((i + 6) * 32 + 3) * 3..((i + 6) * 32 + 30) * 3]);
        }
    }

    #[test]
    fn box_helpers_follow_the_reference() {
        let mut b = [10.0, 20.0, 30.0, 60.0];
        rerec(&mut b);
        assert_eq!(b, [0.0, 20.0, 40.0, 60.0]);
        let mut b = [0.0, 0.0, 9.0, 9.0];
        bbreg(&mut b, &[0.1, -0.1, 0.0, 0.5]);
        assert_eq!(b, [1.0, -1.0, 9.0, 14.0]);
        assert_eq!(pad(&[-3.7, 0.9, 120.2, 99.9], 100, 80), [1, 1, 100, 80]);
        assert_eq!(pad(&[5.9, 7.2, 20.5, 30.99], 100, 80), [5, 7, 20, 30]);
    }

    #[test]
    fn nms_flavours() {
        let c = |b: [f32; 4], s: f32| Cand { b, score: s, reg: [0.0; 4] };
        // IoU of the first two = 81/(100+100-81) = 0.68.
        let cands = [c([0.0, 0.0, 10.0, 10.0], 0.8), c([1.0, 1.0, 11.0, 11.0], 0.9), c([50.0, 50.0, 60.0, 60.0], 0.7)];
        assert_eq!(nms_iou(&cands, 0.5), vec![1, 2]);
        assert_eq!(nms_iou(&cands, 0.7), vec![1, 0, 2]);
        // 'Min': a small box inside a big one is suppressed whatever the IoU.
        let boxes = [[0.0, 0.0, 99.0, 99.0], [10.0, 10.0, 29.0, 29.0]];
        assert_eq!(nms_min(&boxes, &[0.9, 0.95], 0.7), vec![1]);
        assert_eq!(nms_min(&boxes[..1], &[0.9], 0.7), vec![0]);
    }
}
