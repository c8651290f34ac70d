//! MTCNN's three networks — Zhang, Zhang, Li, Qiao, "Joint Face Detection and Alignment using
//! Multi-task Cascaded Convolutional Networks" (IEEE Signal Processing Letters, 2016) — as
//! facenet-pytorch 2.6.0 defines them (timesler/facenet-pytorch @ 787da06, `models/mtcnn.py`:
//! `PNet`, `RNet`, `ONet`). The detector that runs them over a photo (pyramid, stages, NMS) is
//! [`crate::face::detect`].
//!
//! Loads: `pnet.pt`, `rnet.pt`, `onet.pt` as shipped in `facenet_pytorch/data/` (legacy pre-1.6
//! pickled state dicts, MIT licence) or safetensors exports with the same keys (`conv1.weight`,
//! `prelu1.weight`, …, `conv4_1`/`conv4_2`, `dense4`, `dense5_1`/`dense5_2`,
//! `dense6_1`/`dense6_2`/`dense6_3`). Field names are the PyTorch attributes, so a VarStore path
//! is the checkpoint key; loading is strict (every missing, misshapen or extra key reported).

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, Loader};
use crate::error::{Error, Result};
use crate::nn::{Conv2d, ConvSpec, Linear, PReLU};

/// Input sides of RNet and ONet.
pub const RNET_SIDE: usize = 24;
pub const ONET_SIDE: usize = 48;

/// `nn.MaxPool2d(k, s, ceil_mode=True)`, as all three nets use it.
fn max_pool(x: &Tensor, k: i64, s: i64) -> Result<Tensor> {
    Ok(x.f_max_pool2d([k, k], [s, s], [0, 0], [1, 1], true)?)
}

/// Checks an NCHW input: 3 channels, and the spatial size a net needs.
fn check_input(x: &Tensor, net: &'static str, exact: Option<i64>, min: i64) -> Result<()> {
    let size = x.size();
    let ok = size.len() == 4
        && size[1] == 3
        && match exact {
            Some(s) => size[2] == s && size[3] == s,
            None => size[2] >= min && size[3] >= min,
        };
    if ok {
        return Ok(());
    }
    let want = match exact {
        Some(s) => format!("(N, 3, {s}, {s})"),
        None => format!("(N, 3, H, W) with H, W ≥ {min}"),
    };
    Err(Error::arg(net, format!("input of shape {size:?}, expected {want}")))
}

/// Flattens (N, C, H, W) the way the reference's dense layers were trained on:
/// `x.permute(0, 3, 2, 1).contiguous().view(N, -1)` (width-major, a Caffe/TF legacy).
fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    let n = x.size()[0];
    Ok(x.f_permute([0, 3, 2, 1])?.f_contiguous()?.f_view([n, -1])?)
}

/// `PNet`: the fully convolutional proposal net. 12×12 windows at stride 2.
pub struct PNet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    /// `conv4_1` (2 face/non-face logits) and `conv4_2` (4 box offsets) as one 6-channel
    /// 1×1 conv: one pass over conv3's output instead of two.
    conv4: Conv2d,
    _vs: nn::VarStore,
}

impl PNet {
    pub fn load(ck: &Checkpoint, device: Device) -> Result<PNet> {
        let l = Loader::new(ck, "", "MTCNN PNet");
        let vs = nn::VarStore::new(device);
        let r = vs.root();
        let net = PNet {
            conv1: Conv2d::new(&l, &(&r / "conv1"), ConvSpec::new(3, 10, 3))?,
            prelu1: PReLU::new(&l, &(&r / "prelu1"), 10)?,
            conv2: Conv2d::new(&l, &(&r / "conv2"), ConvSpec::new(10, 16, 3))?,
            prelu2: PReLU::new(&l, &(&r / "prelu2"), 16)?,
            conv3: Conv2d::new(&l, &(&r / "conv3"), ConvSpec::new(16, 32, 3))?,
            prelu3: PReLU::new(&l, &(&r / "prelu3"), 32)?,
            conv4: {
                let (a, b) = (
                    Conv2d::new(&l, &(&r / "conv4_1"), ConvSpec::new(32, 2, 1))?,
                    Conv2d::new(&l, &(&r / "conv4_2"), ConvSpec::new(32, 4, 1))?,
                );
                let bias = match (&a.bias, &b.bias) {
                    (Some(x), Some(y)) => Some(Tensor::f_cat(&[x, y], 0)?),
                    _ => None,
                };
                Conv2d::from_tensors(Tensor::f_cat(&[&a.weight, &b.weight], 0)?, bias, 1, 0)
            },
            _vs: vs,
        };
        l.finish(|_| false)?;
        Ok(net)
    }

    /// (N, 3, H, W) normalised pixels → (box regression (N, 4, h, w), softmax (N, 2, h, w)),
    /// h = ⌈(H − 2)/2⌉ − 4; channel 1 of the softmax is the face probability.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, _, h, w) = x.size4()?;
        self.forward_tiles(x, &vec![(h, w); n.max(0) as usize])
    }

    /// [`PNet::forward`] on a tile whose real pixels are its first `rows` × `cols`, the rest
    /// padding. Output (i, j) sees input rows 2i … 2i + 11 and columns 2j … 2j + 11, so the
    /// outputs computed from real pixels equal those of the whole image — provided the pooling
    /// sees the image's edge: conv1 outputs that touch padding are set to −∞ before the
    /// ceil-mode 2×2 pool, which makes a window straddling the edge the partial window the
    /// reference pools there. Tiles must start on even pixels of the image.
    pub fn forward_tile(&self, x: &Tensor, rows: i64, cols: i64) -> Result<(Tensor, Tensor)> {
        self.forward_tiles(x, &[(rows, cols)])
    }

    /// [`PNet::forward_tile`] on a batch of tiles, `valid[b]` the real rows and columns of
    /// tile b.
    pub fn forward_tiles(&self, x: &Tensor, valid: &[(i64, i64)]) -> Result<(Tensor, Tensor)> {
        check_input(x, "pnet input", None, 12)?;
        let (n, _, h, w) = x.size4()?;
        if valid.len() != n as usize {
            return Err(Error::arg("pnet tiles", format!("{} valid sizes for a batch of {n}", valid.len())));
        }
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        for (b, &(rows, cols)) in valid.iter().enumerate() {
            // An image's last output can see as few as 11 real pixels (a partial pooling window).
            if !(3..=h).contains(&rows) || !(3..=w).contains(&cols) {
                return Err(Error::arg(
                    "pnet tile",
                    format!("{rows}×{cols} real pixels in a {h}×{w} tile, need 3..=size"),
                ));
            }
            // In place, through views of x.
            if rows < h {
                let _ = x.f_narrow(0, b as i64, 1)?.f_narrow(2, rows - 2, h - rows)?.f_fill_(f64::NEG_INFINITY)?;
            }
            if cols < w {
                let _ = x.f_narrow(0, b as i64, 1)?.f_narrow(3, cols - 2, w - cols)?.f_fill_(f64::NEG_INFINITY)?;
            }
        }
        let x = max_pool(&x, 2, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let head = self.conv4.forward(&x)?;
        let prob = head.f_narrow(1, 0, 2)?.f_softmax(1, Kind::Float)?;
        let reg = head.f_narrow(1, 2, 4)?;
        Ok((reg, prob))
    }
}

/// `RNet`: refines PNet's candidates on 24×24 crops.
pub struct RNet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    dense4: Linear,
    prelu4: PReLU,
    dense5_1: Linear,
    dense5_2: Linear,
    _vs: nn::VarStore,
}

impl RNet {
    pub fn load(ck: &Checkpoint, device: Device) -> Result<RNet> {
        let l = Loader::new(ck, "", "MTCNN RNet");
        let vs = nn::VarStore::new(device);
        let r = vs.root();
        let net = RNet {
            conv1: Conv2d::new(&l, &(&r / "conv1"), ConvSpec::new(3, 28, 3))?,
            prelu1: PReLU::new(&l, &(&r / "prelu1"), 28)?,
            conv2: Conv2d::new(&l, &(&r / "conv2"), ConvSpec::new(28, 48, 3))?,
            prelu2: PReLU::new(&l, &(&r / "prelu2"), 48)?,
            conv3: Conv2d::new(&l, &(&r / "conv3"), ConvSpec::new(48, 64, 2))?,
            prelu3: PReLU::new(&l, &(&r / "prelu3"), 64)?,
            dense4: Linear::new(&l, &(&r / "dense4"), 576, 128)?,
            prelu4: PReLU::new(&l, &(&r / "prelu4"), 128)?,
            dense5_1: Linear::new(&l, &(&r / "dense5_1"), 128, 2)?,
            dense5_2: Linear::new(&l, &(&r / "dense5_2"), 128, 4)?,
            _vs: vs,
        };
        l.finish(|_| false)?;
        Ok(net)
    }

    /// (N, 3, 24, 24) → (box regression (N, 4), softmax (N, 2)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(x, "rnet input", Some(RNET_SIDE as i64), 0)?;
        let x = max_pool(&self.prelu1.forward(&self.conv1.forward(x)?)?, 3, 2)?;
        let x = max_pool(&self.prelu2.forward(&self.conv2.forward(&x)?)?, 3, 2)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let x = self.prelu4.forward(&self.dense4.forward(&flatten_whc(&x)?)?)?;
        let prob = self.dense5_1.forward(&x)?.f_softmax(1, Kind::Float)?;
        let reg = self.dense5_2.forward(&x)?;
        Ok((reg, prob))
    }
}

/// `ONet`: final boxes, probabilities and five landmarks on 48×48 crops.
pub struct ONet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    conv4: Conv2d,
    prelu4: PReLU,
    dense5: Linear,
    prelu5: PReLU,
    dense6_1: Linear,
    dense6_2: Linear,
    dense6_3: Linear,
    _vs: nn::VarStore,
}

impl ONet {
    pub fn load(ck: &Checkpoint, device: Device) -> Result<ONet> {
        let l = Loader::new(ck, "", "MTCNN ONet");
        let vs = nn::VarStore::new(device);
        let r = vs.root();
        let net = ONet {
            conv1: Conv2d::new(&l, &(&r / "conv1"), ConvSpec::new(3, 32, 3))?,
            prelu1: PReLU::new(&l, &(&r / "prelu1"), 32)?,
            conv2: Conv2d::new(&l, &(&r / "conv2"), ConvSpec::new(32, 64, 3))?,
            prelu2: PReLU::new(&l, &(&r / "prelu2"), 64)?,
            conv3: Conv2d::new(&l, &(&r / "conv3"), ConvSpec::new(64, 64, 3))?,
            prelu3: PReLU::new(&l, &(&r / "prelu3"), 64)?,
            conv4: Conv2d::new(&l, &(&r / "conv4"), ConvSpec::new(64, 128, 2))?,
            prelu4: PReLU::new(&l, &(&r / "prelu4"), 128)?,
            dense5: Linear::new(&l, &(&r / "dense5"), 1152, 256)?,
            prelu5: PReLU::new(&l, &(&r / "prelu5"), 256)?,
            dense6_1: Linear::new(&l, &(&r / "dense6_1"), 256, 2)?,
            dense6_2: Linear::new(&l, &(&r / "dense6_2"), 256, 4)?,
            dense6_3: Linear::new(&l, &(&r / "dense6_3"), 256, 10)?,
            _vs: vs,
        };
        l.finish(|_| false)?;
        Ok(net)
    }

    /// (N, 3, 48, 48) → (box regression (N, 4), landmarks (N, 10): five x then five y as
    /// fractions of the box, softmax (N, 2)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        check_input(x, "onet input", Some(ONET_SIDE as i64), 0)?;
        let x = max_pool(&self.prelu1.forward(&self.conv1.forward(x)?)?, 3, 2)?;
        let x = max_pool(&self.prelu2.forward(&self.conv2.forward(&x)?)?, 3, 2)?;
        let x = max_pool(&self.prelu3.forward(&self.conv3.forward(&x)?)?, 2, 2)?;
        let x = self.prelu4.forward(&self.conv4.forward(&x)?)?;
        let x = self.prelu5.forward(&self.dense5.forward(&flatten_whc(&x)?)?)?;
        let prob = self.dense6_1.forward(&x)?.f_softmax(1, Kind::Float)?;
        let reg = self.dense6_2.forward(&x)?;
        let landmarks = self.dense6_3.forward(&x)?;
        Ok((reg, landmarks, prob))
    }
}
