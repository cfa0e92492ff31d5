//! A diagnostic: the in-memory measurements again, in a child process
//! whose glibc allocator keeps freed memory instead of giving it back.
//!
//! The put path allocates several fresh multi-MiB buffers per chunk (the
//! chunk, the sealed chunk, k+m shards, the Reed-Solomon work area) and
//! frees them all when the chunk is done. With the `datamesh` binary's
//! fixed mmap threshold (mirrored by this benchmark) larger ones of them
//! is an `mmap` whose pages are faulted in, zeroed, on first touch and
//! unmapped on free; with glibc's defaults the heap is trimmed and
//! re-faulted in a way that depends on its history. Running the same
//! measurements with `GLIBC_TUNABLES` set so that freed memory stays in the
//! process shows how much of the time is that churn, in the same run: what
//! reusing buffers would give back.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::stages::InputKind;
use crate::sys;

/// No per-allocation `mmap` below 64 MiB and no trimming below 1 GiB:
/// freed buffers are kept and reused.
pub const TUNABLES: &str = "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=1073741824";

/// The argument that makes this binary print only the in-memory results.
pub const IN_MEMORY_ONLY: &str = "--in-memory-only";

/// One input kind under the tuned allocator.
#[derive(Debug, Clone, Serialize)]
pub struct Tuned {
    /// The input kind.
    pub input: InputKind,
    /// Erasure coding alone, MB/s.
    pub erasure_mbps: f64,
    /// Serial composition, MB/s.
    pub serial_mbps: f64,
    /// The pipeline on one core, MB/s.
    pub one_core_mbps: f64,
    /// One core / serial.
    pub ratio: f64,
    /// The pipeline on all cores, MB/s.
    pub all_cores_mbps: f64,
}

/// The diagnostic's result.
#[derive(Debug, Clone, Serialize)]
pub struct AllocatorCheck {
    /// The `GLIBC_TUNABLES` the child ran with.
    pub tunables: &'static str,
    /// Per input kind.
    pub inputs: Vec<Tuned>,
}

/// Runs this executable with [`IN_MEMORY_ONLY`] and `extra` arguments
/// under [`TUNABLES`], and reads back its results.
pub fn check(extra: &[String]) -> Result<AllocatorCheck> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg(IN_MEMORY_ONLY).args(extra).env("GLIBC_TUNABLES", TUNABLES).stdin(Stdio::null()).stderr(Stdio::null());
    sys::die_with_parent(&mut cmd);
    let out = cmd.output().context("running the allocator diagnostic")?;
    if !out.status.success() {
        bail!("the allocator diagnostic failed ({})", out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("reading the allocator diagnostic's results")?;
    parse(&v)
}

fn parse(v: &Value) -> Result<AllocatorCheck> {
    let f = |x: Option<&Value>| x.and_then(Value::as_f64).unwrap_or(0.0);
    let mut inputs = Vec::new();
    for kind in InputKind::ALL {
        // The JSON names are the serde (snake_case) names of the enums.
        let k = kind.name();
        let stage = v["stages"].as_array().and_then(|a| a.iter().find(|s| s["stage"] == "erasure" && s["input"] == k));
        let Some(p) = v["pipelines"].as_array().and_then(|a| a.iter().find(|p| p["input"] == k)) else {
            bail!("the allocator diagnostic has no {k} pipeline");
        };
        inputs.push(Tuned {
            input: kind,
            erasure_mbps: f(stage.map(|s| &s["mbps"])),
            serial_mbps: f(p.get("serial_mbps")),
            one_core_mbps: f(p.get("one_core_mbps")),
            ratio: f(p.get("ratio")),
            all_cores_mbps: f(p.get("all_cores_mbps")),
        });
    }
    Ok(AllocatorCheck { tunables: TUNABLES, inputs })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_in_memory_json() {
        let v = serde_json::json!({
            "stages": [
                {"stage": "erasure", "input": "random", "mbps": 8000.0, "weight": 1.0},
                {"stage": "erasure", "input": "text", "mbps": 9000.0, "weight": 0.4},
            ],
            "pipelines": [
                {"input": "random", "serial_mbps": 1400.0, "one_core_mbps": 1500.0, "ratio": 1.07, "all_cores_mbps": 2400.0},
                {"input": "text", "serial_mbps": 300.0, "one_core_mbps": 290.0, "ratio": 0.97, "all_cores_mbps": 560.0},
            ]
        });
        let c = parse(&v).unwrap();
        assert_eq!(c.inputs[0].erasure_mbps, 8000.0);
        assert_eq!(c.inputs[1].one_core_mbps, 290.0);
        assert!(parse(&serde_json::json!({})).is_err());
    }

    #[test]
    fn json_names_are_the_ones_parse_looks_for() {
        assert_eq!(serde_json::to_value(crate::stages::Stage::Erasure).unwrap(), "erasure");
        for k in InputKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }
}
