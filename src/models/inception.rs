//! FID Inception-v3 — Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception
//! Architecture for Computer Vision" (CVPR 2016) — as pytorch-fid 0.3.0 runs it for the Fréchet
//! Inception Distance (mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`: `fid_inception_v3()`,
//! `FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1`, `FIDInceptionE_2`, and `InceptionV3([3])`
//! for the pool3 features): the weights of TensorFlow's 2015-12-05 Inception graph in torchvision
//! 0.26's `Inception3(num_classes=1008, aux_logits=False)` layout (`models/inception.py`:
//! `BasicConv2d`, `InceptionA` … `InceptionE`), up to the 2048-wide global average of Mixed_7c.
//!
//! Loads: `pt_inception-2015-12-05-6726825d.pth` (95,628,359 bytes: by its size, a legacy
//! torch.save of a plain dict of 472 tensors) or any state dict with its keys —
//! `Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}`, …
//! `Mixed_5b.branch1x1.*` … `Mixed_7c.branch_pool.*`, `fc.weight`, `fc.bias` — such as
//! `FIDInceptionV3().state_dict()` re-saved by a current torch, which adds a `num_batches_tracked`
//! per BatchNorm. Field names are
//! the PyTorch attributes (hence the capitalised `Conv2d_1a_3x3`, `Mixed_5b`, …), so a VarStore
//! path is the checkpoint key; loading is strict (every missing, misshapen or extra key reported)
//! except for two kinds of keys that FID does not use: the `num_batches_tracked` counters (eval-mode
//! BatchNorm never reads them), and `fc.weight` / `fc.bias`, the graph's 1008-way ImageNet
//! classifier after pool3 (FID compares the pool3 features themselves). Every width is read off
//! the checkpoint's shapes, so the narrow test model (`tests/fixtures/inception/`) loads with the
//! same code; the kernel sizes, strides and paddings are the architecture's and are checked.
//!
//! What differs from torchvision's Inception-v3, each of which moves FID scores (pytorch-fid's
//! patches, mirroring the TF graph):
//! - the 3×3 stride-1 average pool before `branch_pool` in Mixed_5b–5d (`FIDInceptionA`),
//!   Mixed_6b–6e (`FIDInceptionC`) and Mixed_7b (`FIDInceptionE_1`) leaves the zero padding out
//!   of the mean (`count_include_pad=False`);
//! - Mixed_7c (`FIDInceptionE_2`) max-pools there instead (3×3, stride 1, padding 1);
//! - every BatchNorm has eps 0.001 (torchvision's `BasicConv2d`), run in eval mode on the stored
//!   statistics.
//!
//! Input: [`Inception::features`] takes (N, 3, H, W) images in the library's range [-1, 1]
//! and resizes them to 299×299 with plain bilinear interpolation (`F.interpolate(mode='bilinear',
//! align_corners=False)`, no antialiasing, also when shrinking), as `InceptionV3(resize_input=True)`
//! does. pytorch-fid then maps its [0, 1] input to [-1, 1] by `2x − 1`; images here are in that
//! range already, so that step is the identity (resizing first or rescaling first is the same
//! affine map). `clipshape eval` computes FID with it.

use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, Loader};
use crate::error::{Error, Result};
use crate::nn::BatchNorm2d;

/// `InceptionV3(resize_input=True)`: every image is resized to this side first.
pub const INPUT_SIDE: i64 = 299;
/// `BasicConv2d`'s `nn.BatchNorm2d(out_channels, eps=0.001)` (TensorFlow's default).
pub const BN_EPS: f64 = 1e-3;
/// Width of the pool3 features of the official weights (`InceptionV3.BLOCK_INDEX_BY_DIM`).
pub const POOL3_DIM: i64 = 2048;
/// Outputs of the TF graph's classifier `fc` (`fid_inception_v3`'s `num_classes=1008`): in the
/// file, not used for FID.
pub const FC_CLASSES: i64 = 1008;

const MODEL: &str = "FID Inception-v3";

/// Checkpoint keys (under the model's root) that are accepted and not loaded.
fn unused_key(k: &str) -> bool {
    k == "fc.weight" || k == "fc.bias" || k.ends_with(".num_batches_tracked")
}

/// What loading needs besides the [`Loader`]: the checkpoint, to read widths off its shapes.
struct Build<'a> {
    ck: &'a Checkpoint,
    l: Loader<'a>,
    prefix: &'a str,
}

/// How a [`BasicConv2d`] pads, as torchvision gives `padding=` per layer: "same" convs pad
/// (kh/2, kw/2) — the 1×1s, the 3×3s at stride 1 after the stem, the 5×5, 1×7, 7×1, 1×3 and 3×1 —
/// the stem's first, second and last 3×3 and every stride-2 conv pad nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pad {
    Same,
    Valid,
}

impl Build<'_> {
    /// The out-channels of the `BasicConv2d` at `p`: dim 0 of `conv.weight`, else (so that a
    /// missing conv weight is reported with the other key problems) the length of one of its
    /// BatchNorm's vectors; when neither is there the width cannot be told.
    fn out_channels(&self, p: &nn::Path) -> Result<i64> {
        let conv = format!("{}{}.weight", self.prefix, p.path("conv"));
        if let Some(&[c, _, _, _]) = self.ck.shape(&conv) {
            return Ok(c);
        }
        let bn = format!("{}{}", self.prefix, p.path("bn"));
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            if let Some(&[c]) = self.ck.shape(&format!("{bn}.{leaf}")) {
                return Ok(c);
            }
        }
        Err(Error::UnknownArchitecture {
            path: self.ck.path().to_path_buf(),
            model: MODEL,
            reason: format!("missing key `{conv}` (nor `{bn}.*`): cannot tell the width of this layer"),
        })
    }

    fn conv(&self, p: nn::Path, cin: i64, kernel: (i64, i64), stride: i64, pad: Pad) -> Result<BasicConv2d> {
        BasicConv2d::new(self, p, cin, kernel, stride, pad)
    }

    /// A 1×1 conv (always "same", stride 1).
    fn conv1x1(&self, p: nn::Path, cin: i64) -> Result<BasicConv2d> {
        self.conv(p, cin, (1, 1), 1, Pad::Same)
    }
}

/// torchvision's `BasicConv2d`: `conv` (no bias) → `bn` (eps [`BN_EPS`], stored statistics) →
/// ReLU.
pub struct BasicConv2d {
    /// `conv.weight`: (out, in, kh, kw).
    pub conv: Tensor,
    pub bn: BatchNorm2d,
    stride: i64,
    padding: [i64; 2],
    out: i64,
}

impl BasicConv2d {
    fn new(b: &Build, p: nn::Path, cin: i64, (kh, kw): (i64, i64), stride: i64, pad: Pad) -> Result<Self> {
        let out = b.out_channels(&p)?;
        let padding = match pad {
            Pad::Same => [kh / 2, kw / 2],
            Pad::Valid => [0, 0],
        };
        Ok(BasicConv2d {
            conv: b.l.tensor(&(&p / "conv"), "weight", &[out, cin, kh, kw])?,
            bn: BatchNorm2d::new(&b.l, &(&p / "bn"), out)?,
            stride,
            padding,
            out,
        })
    }

    /// Out-channels.
    pub fn out_channels(&self) -> i64 {
        self.out
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.stride;
        let x = x.f_conv2d(&self.conv, None::<Tensor>, [s, s], self.padding, [1, 1], 1)?;
        Ok(self.bn.forward_eps(&x, BN_EPS)?.f_relu()?)
    }
}

/// TensorFlow's 3×3 stride-1 "SAME" average pool: the mean over the in-image part of each
/// window (`F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`).
fn avg_pool_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)?)
}

/// `F.max_pool2d(x, 3, stride=1, padding=1)` (Mixed_7c).
fn max_pool_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)?)
}

/// `nn.MaxPool2d(kernel_size=3, stride=2)`: the stem's two pools and the reduction blocks' pool
/// branch (no padding, floor).
fn max_pool_reduce(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)?)
}

fn cat(parts: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::f_cat(parts, 1)?)
}

/// `FIDInceptionA` (Mixed_5b, 5c, 5d): 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | avg pool
/// (padding excluded) → 1×1, concatenated in that order.
pub struct InceptionA {
    pub branch1x1: BasicConv2d,
    pub branch5x5_1: BasicConv2d,
    pub branch5x5_2: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    pub branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(b: &Build, p: nn::Path, cin: i64) -> Result<Self> {
        let branch5x5_1 = b.conv1x1(&p / "branch5x5_1", cin)?;
        let branch5x5_2 = b.conv(&p / "branch5x5_2", branch5x5_1.out, (5, 5), 1, Pad::Same)?;
        let branch3x3dbl_1 = b.conv1x1(&p / "branch3x3dbl_1", cin)?;
        let branch3x3dbl_2 = b.conv(&p / "branch3x3dbl_2", branch3x3dbl_1.out, (3, 3), 1, Pad::Same)?;
        let branch3x3dbl_3 = b.conv(&p / "branch3x3dbl_3", branch3x3dbl_2.out, (3, 3), 1, Pad::Same)?;
        Ok(InceptionA {
            branch1x1: b.conv1x1(&p / "branch1x1", cin)?,
            branch5x5_1,
            branch5x5_2,
            branch3x3dbl_1,
            branch3x3dbl_2,
            branch3x3dbl_3,
            branch_pool: b.conv1x1(&p / "branch_pool", cin)?,
        })
    }

    fn out_channels(&self) -> i64 {
        self.branch1x1.out + self.branch5x5_2.out + self.branch3x3dbl_3.out + self.branch_pool.out
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x)?)?;
        let b3 = self.branch3x3dbl_1.forward(x)?;
        let b3 = self.branch3x3dbl_3.forward(&self.branch3x3dbl_2.forward(&b3)?)?;
        let bp = self.branch_pool.forward(&avg_pool_same(x)?)?;
        cat(&[b1, b5, b3, bp])
    }
}

/// torchvision's `InceptionB` (Mixed_6a, the 35→17 reduction): 3×3 stride 2 | 1×1 → 3×3 →
/// 3×3 stride 2 | max pool 3×3 stride 2 (the input's channels pass through).
pub struct InceptionB {
    pub branch3x3: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    cin: i64,
}

impl InceptionB {
    fn new(b: &Build, p: nn::Path, cin: i64) -> Result<Self> {
        let branch3x3dbl_1 = b.conv1x1(&p / "branch3x3dbl_1", cin)?;
        let branch3x3dbl_2 = b.conv(&p / "branch3x3dbl_2", branch3x3dbl_1.out, (3, 3), 1, Pad::Same)?;
        let branch3x3dbl_3 = b.conv(&p / "branch3x3dbl_3", branch3x3dbl_2.out, (3, 3), 2, Pad::Valid)?;
        Ok(InceptionB {
            branch3x3: b.conv(&p / "branch3x3", cin, (3, 3), 2, Pad::Valid)?,
            branch3x3dbl_1,
            branch3x3dbl_2,
            branch3x3dbl_3,
            cin,
        })
    }

    fn out_channels(&self) -> i64 {
        self.branch3x3.out + self.branch3x3dbl_3.out + self.cin
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3.forward(x)?;
        let bd = self.branch3x3dbl_1.forward(x)?;
        let bd = self.branch3x3dbl_3.forward(&self.branch3x3dbl_2.forward(&bd)?)?;
        cat(&[b3, bd, max_pool_reduce(x)?])
    }
}

/// `FIDInceptionC` (Mixed_6b–6e): 1×1 | 1×1 → 1×7 → 7×1 | 1×1 → 7×1 → 1×7 → 7×1 → 1×7 |
/// avg pool (padding excluded) → 1×1.
pub struct InceptionC {
    pub branch1x1: BasicConv2d,
    pub branch7x7_1: BasicConv2d,
    pub branch7x7_2: BasicConv2d,
    pub branch7x7_3: BasicConv2d,
    pub branch7x7dbl_1: BasicConv2d,
    pub branch7x7dbl_2: BasicConv2d,
    pub branch7x7dbl_3: BasicConv2d,
    pub branch7x7dbl_4: BasicConv2d,
    pub branch7x7dbl_5: BasicConv2d,
    pub branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(b: &Build, p: nn::Path, cin: i64) -> Result<Self> {
        let (row, col) = ((1, 7), (7, 1));
        let branch7x7_1 = b.conv1x1(&p / "branch7x7_1", cin)?;
        let branch7x7_2 = b.conv(&p / "branch7x7_2", branch7x7_1.out, row, 1, Pad::Same)?;
        let branch7x7_3 = b.conv(&p / "branch7x7_3", branch7x7_2.out, col, 1, Pad::Same)?;
        let branch7x7dbl_1 = b.conv1x1(&p / "branch7x7dbl_1", cin)?;
        let branch7x7dbl_2 = b.conv(&p / "branch7x7dbl_2", branch7x7dbl_1.out, col, 1, Pad::Same)?;
        let branch7x7dbl_3 = b.conv(&p / "branch7x7dbl_3", branch7x7dbl_2.out, row, 1, Pad::Same)?;
        let branch7x7dbl_4 = b.conv(&p / "branch7x7dbl_4", branch7x7dbl_3.out, col, 1, Pad::Same)?;
        let branch7x7dbl_5 = b.conv(&p / "branch7x7dbl_5", branch7x7dbl_4.out, row, 1, Pad::Same)?;
        Ok(InceptionC {
            branch1x1: b.conv1x1(&p / "branch1x1", cin)?,
            branch7x7_1,
            branch7x7_2,
            branch7x7_3,
            branch7x7dbl_1,
            branch7x7dbl_2,
            branch7x7dbl_3,
            branch7x7dbl_4,
            branch7x7dbl_5,
            branch_pool: b.conv1x1(&p / "branch_pool", cin)?,
        })
    }

    fn out_channels(&self) -> i64 {
        self.branch1x1.out + self.branch7x7_3.out + self.branch7x7dbl_5.out + self.branch_pool.out
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let mut b7 = self.branch7x7_1.forward(x)?;
        for conv in [&self.branch7x7_2, &self.branch7x7_3] {
            b7 = conv.forward(&b7)?;
        }
        let mut bd = self.branch7x7dbl_1.forward(x)?;
        for conv in [&self.branch7x7dbl_2, &self.branch7x7dbl_3, &self.branch7x7dbl_4, &self.branch7x7dbl_5] {
            bd = conv.forward(&bd)?;
        }
        let bp = self.branch_pool.forward(&avg_pool_same(x)?)?;
        cat(&[b1, b7, bd, bp])
    }
}

/// torchvision's `InceptionD` (Mixed_7a, the 17→8 reduction): 1×1 → 3×3 stride 2 | 1×1 → 1×7 →
/// 7×1 → 3×3 stride 2 | max pool 3×3 stride 2 (the input's channels pass through).
pub struct InceptionD {
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2: BasicConv2d,
    pub branch7x7x3_1: BasicConv2d,
    pub branch7x7x3_2: BasicConv2d,
    pub branch7x7x3_3: BasicConv2d,
    pub branch7x7x3_4: BasicConv2d,
    cin: i64,
}

impl InceptionD {
    fn new(b: &Build, p: nn::Path, cin: i64) -> Result<Self> {
        let branch3x3_1 = b.conv1x1(&p / "branch3x3_1", cin)?;
        let branch3x3_2 = b.conv(&p / "branch3x3_2", branch3x3_1.out, (3, 3), 2, Pad::Valid)?;
        let branch7x7x3_1 = b.conv1x1(&p / "branch7x7x3_1", cin)?;
        let branch7x7x3_2 = b.conv(&p / "branch7x7x3_2", branch7x7x3_1.out, (1, 7), 1, Pad::Same)?;
        let branch7x7x3_3 = b.conv(&p / "branch7x7x3_3", branch7x7x3_2.out, (7, 1), 1, Pad::Same)?;
        let branch7x7x3_4 = b.conv(&p / "branch7x7x3_4", branch7x7x3_3.out, (3, 3), 2, Pad::Valid)?;
        Ok(InceptionD { branch3x3_1, branch3x3_2, branch7x7x3_1, branch7x7x3_2, branch7x7x3_3, branch7x7x3_4, cin })
    }

    fn out_channels(&self) -> i64 {
        self.branch3x3_2.out + self.branch7x7x3_4.out + self.cin
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3_2.forward(&self.branch3x3_1.forward(x)?)?;
        let mut b7 = self.branch7x7x3_1.forward(x)?;
        for conv in [&self.branch7x7x3_2, &self.branch7x7x3_3, &self.branch7x7x3_4] {
            b7 = conv.forward(&b7)?;
        }
        cat(&[b3, b7, max_pool_reduce(x)?])
    }
}

/// The pool before `branch_pool` in an E block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EPool {
    /// `FIDInceptionE_1` (Mixed_7b): average, padding excluded.
    Average,
    /// `FIDInceptionE_2` (Mixed_7c): max — "likely an error" in the TF graph, pytorch-fid notes,
    /// but the one the published FIDs were computed with.
    Max,
}

/// `FIDInceptionE_1` / `FIDInceptionE_2` (Mixed_7b, 7c): 1×1 | 1×1 → (1×3 ‖ 3×1) | 1×1 → 3×3 →
/// (1×3 ‖ 3×1) | pool → 1×1, where ‖ runs both on the same input and concatenates.
pub struct InceptionE {
    pub branch1x1: BasicConv2d,
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2a: BasicConv2d,
    pub branch3x3_2b: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3a: BasicConv2d,
    pub branch3x3dbl_3b: BasicConv2d,
    pub branch_pool: BasicConv2d,
    pub pool: EPool,
}

impl InceptionE {
    fn new(b: &Build, p: nn::Path, cin: i64, pool: EPool) -> Result<Self> {
        let (row, col) = ((1, 3), (3, 1));
        let branch3x3_1 = b.conv1x1(&p / "branch3x3_1", cin)?;
        let branch3x3_2a = b.conv(&p / "branch3x3_2a", branch3x3_1.out, row, 1, Pad::Same)?;
        let branch3x3_2b = b.conv(&p / "branch3x3_2b", branch3x3_1.out, col, 1, Pad::Same)?;
        let branch3x3dbl_1 = b.conv1x1(&p / "branch3x3dbl_1", cin)?;
        let branch3x3dbl_2 = b.conv(&p / "branch3x3dbl_2", branch3x3dbl_1.out, (3, 3), 1, Pad::Same)?;
        let branch3x3dbl_3a = b.conv(&p / "branch3x3dbl_3a", branch3x3dbl_2.out, row, 1, Pad::Same)?;
        let branch3x3dbl_3b = b.conv(&p / "branch3x3dbl_3b", branch3x3dbl_2.out, col, 1, Pad::Same)?;
        Ok(InceptionE {
            branch1x1: b.conv1x1(&p / "branch1x1", cin)?,
            branch3x3_1,
            branch3x3_2a,
            branch3x3_2b,
            branch3x3dbl_1,
            branch3x3dbl_2,
            branch3x3dbl_3a,
            branch3x3dbl_3b,
            branch_pool: b.conv1x1(&p / "branch_pool", cin)?,
            pool,
        })
    }

    fn out_channels(&self) -> i64 {
        self.branch1x1.out
            + self.branch3x3_2a.out
            + self.branch3x3_2b.out
            + self.branch3x3dbl_3a.out
            + self.branch3x3dbl_3b.out
            + self.branch_pool.out
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b3 = self.branch3x3_1.forward(x)?;
        let (b3a, b3b) = (self.branch3x3_2a.forward(&b3)?, self.branch3x3_2b.forward(&b3)?);
        let bd = self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x)?)?;
        let (bda, bdb) = (self.branch3x3dbl_3a.forward(&bd)?, self.branch3x3dbl_3b.forward(&bd)?);
        let pooled = match self.pool {
            EPool::Average => avg_pool_same(x)?,
            EPool::Max => max_pool_same(x)?,
        };
        let bp = self.branch_pool.forward(&pooled)?;
        // torch.cat of [b1, cat(b3a, b3b), cat(bda, bdb), bp] is this one concatenation.
        cat(&[b1, b3a, b3b, bda, bdb, bp])
    }
}

/// pytorch-fid's `FIDInceptionV3` (`fid_inception_v3()`) up to pool3, frozen, in eval mode.
#[allow(non_snake_case)]
pub struct Inception {
    pub vs: nn::VarStore,
    pub Conv2d_1a_3x3: BasicConv2d,
    pub Conv2d_2a_3x3: BasicConv2d,
    pub Conv2d_2b_3x3: BasicConv2d,
    pub Conv2d_3b_1x1: BasicConv2d,
    pub Conv2d_4a_3x3: BasicConv2d,
    pub Mixed_5b: InceptionA,
    pub Mixed_5c: InceptionA,
    pub Mixed_5d: InceptionA,
    pub Mixed_6a: InceptionB,
    pub Mixed_6b: InceptionC,
    pub Mixed_6c: InceptionC,
    pub Mixed_6d: InceptionC,
    pub Mixed_6e: InceptionC,
    pub Mixed_7a: InceptionD,
    pub Mixed_7b: InceptionE,
    pub Mixed_7c: InceptionE,
    pool3_dim: i64,
}

impl Inception {
    /// Opens and loads `path` (the official `.pth`, or a safetensors export with its keys).
    pub fn load(path: &Path, device: Device) -> Result<Inception> {
        Self::load_checkpoint(&Checkpoint::open(path)?, "", device)
    }

    /// Loads the network found under `prefix` ("" for the official file) onto `device`.
    pub fn load_checkpoint(ck: &Checkpoint, prefix: &str, device: Device) -> Result<Inception> {
        if ck.contains(&format!("{prefix}AuxLogits.conv0.conv.weight")) {
            return Err(Error::UnknownArchitecture {
                path: ck.path().to_path_buf(),
                model: MODEL,
                reason: "this is torchvision's ImageNet Inception-v3 (it has `AuxLogits`), not the FID weights \
                         `pt_inception-2015-12-05-6726825d.pth`: its features give FIDs not comparable with \
                         published ones"
                    .into(),
            });
        }
        let b = Build { ck, l: Loader::new(ck, prefix, MODEL), prefix };
        let net = Self::build(&b, device)?;
        b.l.finish(unused_key)?;
        Ok(net)
    }

    fn build(b: &Build, device: Device) -> Result<Inception> {
        let vs = nn::VarStore::new(device);
        let r = vs.root();
        let k3 = (3, 3);
        let c1a = b.conv(&r / "Conv2d_1a_3x3", 3, k3, 2, Pad::Valid)?;
        let c2a = b.conv(&r / "Conv2d_2a_3x3", c1a.out, k3, 1, Pad::Valid)?;
        let c2b = b.conv(&r / "Conv2d_2b_3x3", c2a.out, k3, 1, Pad::Same)?;
        let c3b = b.conv1x1(&r / "Conv2d_3b_1x1", c2b.out)?;
        let c4a = b.conv(&r / "Conv2d_4a_3x3", c3b.out, k3, 1, Pad::Valid)?;
        let m5b = InceptionA::new(b, &r / "Mixed_5b", c4a.out)?;
        let m5c = InceptionA::new(b, &r / "Mixed_5c", m5b.out_channels())?;
        let m5d = InceptionA::new(b, &r / "Mixed_5d", m5c.out_channels())?;
        let m6a = InceptionB::new(b, &r / "Mixed_6a", m5d.out_channels())?;
        let m6b = InceptionC::new(b, &r / "Mixed_6b", m6a.out_channels())?;
        let m6c = InceptionC::new(b, &r / "Mixed_6c", m6b.out_channels())?;
        let m6d = InceptionC::new(b, &r / "Mixed_6d", m6c.out_channels())?;
        let m6e = InceptionC::new(b, &r / "Mixed_6e", m6d.out_channels())?;
        let m7a = InceptionD::new(b, &r / "Mixed_7a", m6e.out_channels())?;
        let m7b = InceptionE::new(b, &r / "Mixed_7b", m7a.out_channels(), EPool::Average)?;
        let m7c = InceptionE::new(b, &r / "Mixed_7c", m7b.out_channels(), EPool::Max)?;
        let pool3_dim = m7c.out_channels();
        Ok(Inception {
            vs,
            Conv2d_1a_3x3: c1a,
            Conv2d_2a_3x3: c2a,
            Conv2d_2b_3x3: c2b,
            Conv2d_3b_1x1: c3b,
            Conv2d_4a_3x3: c4a,
            Mixed_5b: m5b,
            Mixed_5c: m5c,
            Mixed_5d: m5d,
            Mixed_6a: m6a,
            Mixed_6b: m6b,
            Mixed_6c: m6c,
            Mixed_6d: m6d,
            Mixed_6e: m6e,
            Mixed_7a: m7a,
            Mixed_7b: m7b,
            Mixed_7c: m7c,
            pool3_dim,
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Width of [`Inception::features`] ([`POOL3_DIM`] for the official weights).
    pub fn pool3_dim(&self) -> i64 {
        self.pool3_dim
    }

    /// pytorch-fid's pool3 features, `InceptionV3([3])(x)[0].squeeze()`: (N, 3, H, W) float32
    /// images in [-1, 1], any size → (N, pool3_dim). Resized to 299×299 (bilinear,
    /// align_corners=False, no antialiasing), then Conv2d_1a … Mixed_7c and a global average.
    /// Differentiable; call it under `tch::no_grad` for evaluation.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.check_input(images)?;
        let x = images.f_upsample_bilinear2d([INPUT_SIDE, INPUT_SIDE], false, None::<f64>, None::<f64>)?;
        let x = self.Conv2d_2b_3x3.forward(&self.Conv2d_2a_3x3.forward(&self.Conv2d_1a_3x3.forward(&x)?)?)?;
        let x = max_pool_reduce(&x)?;
        let x = self.Conv2d_4a_3x3.forward(&self.Conv2d_3b_1x1.forward(&x)?)?;
        let x = max_pool_reduce(&x)?;
        let x = self.Mixed_5b.forward(&x)?;
        let x = self.Mixed_5c.forward(&x)?;
        let x = self.Mixed_5d.forward(&x)?;
        let x = self.Mixed_6a.forward(&x)?;
        let x = self.Mixed_6b.forward(&x)?;
        let x = self.Mixed_6c.forward(&x)?;
        let x = self.Mixed_6d.forward(&x)?;
        let x = self.Mixed_6e.forward(&x)?;
        let x = self.Mixed_7a.forward(&x)?;
        let x = self.Mixed_7b.forward(&x)?;
        let x = self.Mixed_7c.forward(&x)?;
        Ok(x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let size = x.size();
        if size.len() != 4 || size[0] < 1 || size[1] != 3 || size[2] < 1 || size[3] < 1 {
            return Err(Error::arg(
                "images",
                format!("shape {size:?}: the FID Inception takes (N, 3, H, W) images in [-1, 1], N ≥ 1"),
            ));
        }
        if x.kind() != Kind::Float {
            return Err(Error::arg("images", format!("dtype {:?}, expected float32", x.kind())));
        }
        if x.device() != self.device() {
            return Err(Error::arg("images", format!("are on {:?}, the network on {:?}", x.device(), self.device())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_keys_are_the_classifier_and_the_counters() {
        assert!(unused_key("fc.weight") && unused_key("fc.bias"));
        assert!(unused_key("Mixed_6b.branch7x7_2.bn.num_batches_tracked"));
        assert!(!unused_key("fc.extra") && !unused_key("AuxLogits.fc.weight") && !unused_key("Mixed_5b.fc.weight"));
        assert!(!unused_key("Mixed_5b.branch1x1.bn.running_var"));
    }

    #[test]
    fn a_foreign_checkpoint_is_unknown_architecture() {
        let ck = Checkpoint::from_tensors(
            "other.safetensors",
            [("style.1.weight".to_string(), Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)))],
        );
        let e = Inception::load_checkpoint(&ck, "", Device::Cpu).err().expect("loaded a foreign checkpoint");
        assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e:?}");
        assert!(e.to_string().contains("Conv2d_1a_3x3.conv.weight"), "{e}");
    }
}
