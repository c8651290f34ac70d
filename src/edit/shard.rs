//! The paper's table over many machines: `clipshape eval --shard I/N --stats-out FILE` measures
//! one shard of the pictures, `clipshape eval --merge FILE…` puts the shards together and prints
//! the table the whole set gives (tools/eval_ray.py and tools/eval_slurm.sh fan the shards out).
//!
//! The split: picture `p` (its place in the seed list, or in the sorted list of latent files)
//! belongs to shard `p mod N`, so every picture is in exactly one shard and the shards are
//! equal to within one picture.
//!
//! A shard's file holds each of its pictures' measures ([`Measured`]): the CLIP similarities and
//! changes per strength as float64, and the Inception pool features as the network gives them
//! (2048 float32 per picture and strength). Merged in picture order they give the unsharded
//! table bit for bit. The alternative, each shard's float64 sums and sums of outer products,
//! is 2048² × 8 B = 32 MB per strength and shard whatever its size, against 8 kB per picture:
//! smaller up to 4,000 pictures a shard, and not exact. With the figures, the file names what
//! they were measured with — the shifts', the generator's and the Inception network's
//! fingerprints and every option — so shards of different runs refuse to merge, by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use crate::edit::eval::Measured;
use crate::edit::Shift;
use crate::error::{Error, Result};
use crate::models::stylegan2::Generator;

/// Shard `index` of `count` (0 ≤ index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `I/N`, I counted from 0.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || Error::arg("shard", format!("`{text}`: expected I/N with 0 ≤ I < N (I counts from 0)"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count || count > 1_000_000 {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether picture `p` of the set is this shard's.
    pub fn holds(&self, p: usize) -> bool {
        p % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One shard's measures and what they were measured with.
pub struct ShardStats {
    pub shard: Shard,
    /// Pictures in the whole set.
    pub total: usize,
    /// What must be equal for shards to merge: fingerprints and options, by name.
    pub identity: BTreeMap<String, String>,
    /// The strengths as given (k = 0 is measured first, before them).
    pub strengths: Vec<f64>,
    pub measured: Vec<Measured>,
}

const FORMAT: &str = "clipshape-eval-shard";

impl ShardStats {
    /// Writes the file (safetensors, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let m = self.measured.len();
        let s = self.strengths.len() + 1;
        let index: Vec<u8> = self.measured.iter().flat_map(|p| (p.index as i64).to_le_bytes()).collect();
        let clip: Vec<u8> = self.measured.iter().flat_map(|p| p.clip.iter().flat_map(|v| v.to_le_bytes())).collect();
        let change: Vec<u8> =
            self.measured.iter().flat_map(|p| p.change.iter().flat_map(|v| v.to_le_bytes())).collect();
        let mut features = None;
        if self.measured.first().is_some_and(|p| p.features.is_some()) {
            let all = self
                .measured
                .iter()
                .map(|p| {
                    p.features.as_ref().map(|f| f.shallow_clone()).ok_or_else(|| Error::arg("features", "missing"))
                })
                .collect::<Result<Vec<_>>>()?;
            let t = Tensor::f_stack(&all, 0)?.f_to_kind(Kind::Float)?.f_contiguous()?;
            let mut bytes = vec![0u8; t.numel() * 4];
            t.f_copy_data_u8(&mut bytes, t.numel())?;
            features = Some((t.size().iter().map(|&d| d as usize).collect::<Vec<_>>(), bytes));
        }
        use safetensors::tensor::TensorView;
        use safetensors::Dtype;
        fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>> {
            TensorView::new(dtype, shape, data).map_err(|e| Error::Internal(format!("stats file: {e}")))
        }
        let mut views = vec![
            ("index".to_string(), view(Dtype::I64, vec![m], &index)?),
            ("clip".to_string(), view(Dtype::F64, vec![m, s], &clip)?),
            ("change".to_string(), view(Dtype::F64, vec![m, s], &change)?),
        ];
        if let Some((shape, bytes)) = &features {
            views.push(("features".to_string(), view(Dtype::F32, shape.clone(), bytes)?));
        }
        let mut meta: std::collections::HashMap<String, String> =
            self.identity.iter().map(|(k, v)| (format!("id.{k}"), v.clone())).collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("shard".into(), self.shard.to_string());
        meta.insert("total".into(), self.total.to_string());
        meta.insert("strengths".into(), serde_json::to_string(&self.strengths).unwrap_or_default());
        let bytes = safetensors::serialize(views, &Some(meta))
            .map_err(|e| Error::Internal(format!("stats file {}: {e}", path.display())))?;
        crate::io::write_atomic(path, &bytes)
    }

    /// Reads a file [`ShardStats::save`] wrote; anything else is named.
    pub fn load(path: &Path) -> Result<ShardStats> {
        let not = |why: String| {
            Error::arg("stats file", format!("{}: not a stats file of `clipshape eval --shard`: {why}", path.display()))
        };
        if !std::fs::metadata(path).map_err(|e| Error::io(path, e))?.is_file() {
            return Err(not("not a regular file".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| not(format!("{e} (cut short?)")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(not("its format is not recorded".into()));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| not(format!("{e} (cut short?)")))?;
        let shard =
            Shard::parse(meta.get("shard").map(String::as_str).unwrap_or_default()).map_err(|e| not(e.to_string()))?;
        let total: usize = meta.get("total").and_then(|t| t.parse().ok()).ok_or_else(|| not("no total".into()))?;
        let strengths: Vec<f64> = meta
            .get("strengths")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| not("no strengths".into()))?;
        let s = strengths.len() + 1;
        let read = |name: &str, width: usize| -> Result<(Vec<usize>, Vec<u8>)> {
            let t = st.tensor(name).map_err(|_| not(format!("no `{name}`")))?;
            if t.data().len() != t.shape().iter().product::<usize>() * width {
                return Err(not(format!("`{name}` is cut short")));
            }
            Ok((t.shape().to_vec(), t.data().to_vec()))
        };
        let (ishape, index) = read("index", 8)?;
        let m = *ishape.first().ok_or_else(|| not("`index` has no length".into()))?;
        let (cshape, clip) = read("clip", 8)?;
        let (hshape, change) = read("change", 8)?;
        if cshape != [m, s] || hshape != [m, s] {
            return Err(not(format!("`clip` {cshape:?} and `change` {hshape:?} are not {m} pictures × {s} strengths")));
        }
        let features = match st.tensor("features") {
            Ok(_) => {
                let (fshape, data) = read("features", 4)?;
                if fshape.len() != 3 || fshape[0] != m || fshape[1] != s {
                    return Err(not(format!("`features` {fshape:?} is not {m} pictures × {s} strengths × D")));
                }
                let floats: Vec<f32> =
                    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                Some(Tensor::f_from_slice(&floats)?.f_view([m as i64, s as i64, fshape[2] as i64])?)
            }
            Err(_) => None,
        };
        let f64s = |b: &[u8]| -> Vec<f64> {
            b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
        };
        let (clip, change) = (f64s(&clip), f64s(&change));
        let mut measured = Vec::with_capacity(m);
        for (p, ix) in index.chunks_exact(8).enumerate() {
            let ix = i64::from_le_bytes(ix.try_into().unwrap_or([0; 8]));
            let ix = usize::try_from(ix).map_err(|_| not(format!("picture index {ix}")))?;
            let features = features.as_ref().map(|f| f.f_get(p as i64)).transpose()?;
            measured.push(Measured {
                index: ix,
                clip: clip[p * s..(p + 1) * s].to_vec(),
                change: change[p * s..(p + 1) * s].to_vec(),
                features,
            });
        }
        let identity = meta.iter().filter_map(|(k, v)| Some((k.strip_prefix("id.")?.to_string(), v.clone()))).collect();
        Ok(ShardStats { shard, total, identity, strengths, measured })
    }
}

/// The shards of one run put together.
pub struct Merged {
    /// What they were all measured with (see [`ShardStats::identity`]).
    pub identity: BTreeMap<String, String>,
    pub strengths: Vec<f64>,
    /// Every picture's measures.
    pub measured: Vec<Measured>,
}

/// Puts the shards of one run together: every shard of the same N exactly once, each holding
/// exactly its pictures, all measured with the same shifts, generator, Inception network and
/// options.
pub fn merge(paths: &[PathBuf]) -> Result<Merged> {
    let first = paths.first().ok_or_else(|| Error::arg("merge", "no stats files given"))?;
    let mut seen: BTreeMap<usize, PathBuf> = BTreeMap::new();
    // The first file's header (its measures moved out): every other file must agree with it.
    let mut head: Option<ShardStats> = None;
    let mut all = Vec::new();
    for path in paths {
        let mut s = ShardStats::load(path)?;
        if let Some(ShardStats { shard: Shard { count, .. }, total, identity, strengths, .. }) = &head {
            let differs = |what: &str, a: &str, b: &str| {
                Error::Mismatch(format!(
                    "{}: measured with another {what} than {} ({b} against {a}): the shards of different runs do not merge",
                    path.display(),
                    first.display()
                ))
            };
            if s.shard.count != *count {
                return Err(differs("shard count", &count.to_string(), &s.shard.count.to_string()));
            }
            if s.total != *total {
                return Err(differs("picture count", &total.to_string(), &s.total.to_string()));
            }
            if s.strengths != *strengths {
                return Err(differs("strengths", &format!("{strengths:?}"), &format!("{:?}", s.strengths)));
            }
            let keys: std::collections::BTreeSet<&String> = identity.keys().chain(s.identity.keys()).collect();
            for k in keys {
                let (a, b) = (identity.get(k).map(String::as_str), s.identity.get(k).map(String::as_str));
                if a != b {
                    return Err(differs(k, a.unwrap_or("none"), b.unwrap_or("none")));
                }
            }
        }
        if let Some(other) = seen.insert(s.shard.index, path.clone()) {
            return Err(Error::arg(
                "merge",
                format!("{} and {} are both shard {}: give each shard once", other.display(), path.display(), s.shard),
            ));
        }
        let want: Vec<usize> = (0..s.total).filter(|&p| s.shard.holds(p)).collect();
        let mut got: Vec<usize> = s.measured.iter().map(|m| m.index).collect();
        got.sort_unstable();
        if got != want {
            return Err(Error::arg(
                "stats file",
                format!(
                    "{}: shard {} holds pictures {:?}…, not its {} of {}",
                    path.display(),
                    s.shard,
                    &got[..got.len().min(5)],
                    want.len(),
                    s.total
                ),
            ));
        }
        all.append(&mut s.measured);
        head.get_or_insert(s);
    }
    let ShardStats { shard: Shard { count, .. }, identity, strengths, .. } =
        head.ok_or_else(|| Error::arg("merge", "no stats files given"))?;
    let missing: Vec<String> = (0..count).filter(|i| !seen.contains_key(i)).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        return Err(Error::arg("merge", format!("shard {} missing ({} files given)", missing.join(", "), paths.len())));
    }
    Ok(Merged { identity, strengths, measured: all })
}

/// A fingerprint of a generator: its shape and every editable layer's raw weight.
pub fn generator_fingerprint(g: &Generator) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("{:?}", g.config.channels).as_bytes());
    h.update(format!("{} {} {}", g.config.size, g.config.style_dim, g.config.n_mlp).as_bytes());
    for layer in g.layers() {
        h.update(tensor_bytes(g.layer_weight(layer.id)?)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// A fingerprint of a shift: its targets and values.
pub fn shift_fingerprint(s: &Shift) -> Result<String> {
    let mut h = Sha256::new();
    for p in &s.parts {
        h.update(p.target.to_string().as_bytes());
        h.update(tensor_bytes(&p.x)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// A file's SHA-256.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
    let mut bytes = vec![0u8; t.numel() * 4];
    t.f_copy_data_u8(&mut bytes, t.numel())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_pictures_once_each() {
        let shards: Vec<Shard> = (0..4).map(|i| Shard::parse(&format!("{i}/4")).unwrap()).collect();
        for p in 0..17 {
            assert_eq!(shards.iter().filter(|s| s.holds(p)).count(), 1, "picture {p}");
        }
        for bad in ["4/4", "1/0", "-1/4", "a/4", "2", "1/2/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
