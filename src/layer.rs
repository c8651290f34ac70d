//! The generator's editable layers, by their module paths in rosinality's `Generator`
//! (`conv1`, `convs.N`, `to_rgb1`, `to_rgbs.N`): what a shift targets, which resolution it
//! works on and which W+ row styles it. Plain data, used from the model store's manifest up.

use std::fmt;

use crate::error::{Error, Result};

/// Which modulated conv a weight shift goes to. Names are the module paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerId {
    Conv1,
    Convs(usize),
    ToRgb1,
    ToRgbs(usize),
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerId::Conv1 => write!(f, "conv1"),
            LayerId::Convs(i) => write!(f, "convs.{i}"),
            LayerId::ToRgb1 => write!(f, "to_rgb1"),
            LayerId::ToRgbs(i) => write!(f, "to_rgbs.{i}"),
        }
    }
}

impl LayerId {
    /// Every layer of a `size` px generator in forward order: rosinality's layout, where each
    /// resolution from 8 px up has two `convs` and one `to_rgbs`. `None` unless `size` is a power
    /// of two ≥ 8.
    pub fn all(size: u32) -> Option<Vec<LayerId>> {
        if size < 8 || !size.is_power_of_two() {
            return None;
        }
        let n_convs = 2 * (size.trailing_zeros() as usize - 2);
        let mut out = vec![LayerId::Conv1, LayerId::ToRgb1];
        for j in 0..n_convs {
            out.push(LayerId::Convs(j));
            if j % 2 == 1 {
                out.push(LayerId::ToRgbs(j / 2));
            }
        }
        Some(out)
    }

    /// Side (px) of the feature map the layer works on.
    pub fn resolution(self) -> i64 {
        match self {
            LayerId::Conv1 | LayerId::ToRgb1 => 4,
            LayerId::Convs(j) => 8 << (j / 2),
            LayerId::ToRgbs(t) => 8 << t,
        }
    }

    /// Which W+ row styles the layer.
    pub fn wplus_index(self) -> i64 {
        match self {
            LayerId::Conv1 => 0,
            LayerId::ToRgb1 => 1,
            LayerId::Convs(j) => j as i64 + 1,
            LayerId::ToRgbs(t) => 2 * t as i64 + 3,
        }
    }

    /// Parses `convs.3`, also accepting the parameter name (`convs.3.conv.weight`).
    pub fn parse(s: &str) -> Option<LayerId> {
        let s = s.trim().trim_end_matches(".conv.weight");
        let index = |rest: &str| rest.parse::<usize>().ok();
        match s {
            "conv1" => Some(LayerId::Conv1),
            "to_rgb1" => Some(LayerId::ToRgb1),
            _ => {
                if let Some(r) = s.strip_prefix("convs.") {
                    index(r).map(LayerId::Convs)
                } else if let Some(r) = s.strip_prefix("to_rgbs.") {
                    index(r).map(LayerId::ToRgbs)
                } else {
                    None
                }
            }
        }
    }
}

impl serde::Serialize for LayerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for LayerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LayerId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a generator layer (conv1, convs.N, to_rgb1, to_rgbs.N)"))
        })
    }
}

impl std::str::FromStr for LayerId {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<LayerId> {
        LayerId::parse(s).ok_or_else(|| {
            Error::arg("layer", format!("`{s}` is not a generator layer (conv1, convs.N, to_rgb1, to_rgbs.N)"))
        })
    }
}
