//! A learned weight shift: a tensor shaped like one modulated conv's raw weight, plus the facts
//! of how it was made. File form: safetensors with float32 `shift` and string metadata, at least
//! `layer` (e.g. `convs.3`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::io::{check_finite, safetensors_bytes, write_atomic};
use crate::models::stylegan2::{Generator, LayerId};

pub struct Shift {
    pub layer: LayerId,
    /// Same shape as the layer's raw weight (1, out, in, k, k), on the generator's device.
    pub x: Tensor,
    pub meta: BTreeMap<String, String>,
}

impl Shift {
    /// Validates the layer name and the tensor's shape and values against `g`.
    pub fn new(g: &Generator, layer: &str, x: Tensor) -> Result<Shift> {
        let info = g.layer_by_name(layer)?;
        if x.size() != info.weight_shape {
            return Err(Error::arg(
                "shift",
                format!("shape {:?} does not match layer `{}` whose weight is {:?}", x.size(), info.id, info.weight_shape),
            ));
        }
        check_finite("shift", &x)?;
        let x = x.f_to_kind(tch::Kind::Float)?.f_to_device(g.device())?;
        let meta = BTreeMap::from([("layer".to_string(), info.id.to_string())]);
        Ok(Shift { layer: info.id, x, meta })
    }

    pub fn from_slice(g: &Generator, layer: &str, data: &[f32]) -> Result<Shift> {
        let info = g.layer_by_name(layer)?;
        let n: i64 = info.weight_shape.iter().product();
        if data.len() as i64 != n {
            return Err(Error::arg(
                "shift",
                format!("{} floats given, layer `{}` has {n} ({:?})", data.len(), info.id, info.weight_shape),
            ));
        }
        Shift::new(g, layer, Tensor::from_slice(data).f_view(info.weight_shape.as_slice())?)
    }

    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let t = self.x.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        Ok(Vec::<f32>::try_from(&t)?)
    }

    pub fn load(g: &Generator, path: &Path) -> Result<Shift> {
        let ck = Checkpoint::open(path)?;
        let layer = ck
            .metadata()
            .get("layer")
            .ok_or_else(|| Error::format(path, "shift file has no `layer` metadata"))?
            .clone();
        let x = ck.tensor("shift")?;
        let mut s = Shift::new(g, &layer, x).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => Error::Mismatch(format!("{}: {reason}", path.display())),
            e => e,
        })?;
        s.meta.extend(ck.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(s)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta: HashMap<String, String> = self.meta.clone().into_iter().collect();
        meta.insert("layer".into(), self.layer.to_string());
        meta.insert("format".into(), "clipshape-shift".into());
        meta.insert("library_version".into(), crate::VERSION.into());
        write_atomic(path, &safetensors_bytes(&[("shift", &self.x)], &meta)?)
    }
}
