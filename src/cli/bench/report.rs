//! The JSON report of a suite: what ran where, and every case's figures or why it has none.
//! Written whole (a temporary file renamed into place); read back by `--compare` and `--plot`,
//! which reject a file that is not one, whole and of a known format version, in one line.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::record::{Figures, RequestFields};

/// The `format` field of every report.
pub const FORMAT: &str = "wgattn-bench-report";
/// The `format_version` this build writes and reads. Readers ignore fields they do not know,
/// so adding one keeps the version; renaming or removing one bumps it.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub format_version: u32,
    /// The crate version of the `wgattn` that ran the suite.
    pub wgattn_version: String,
    /// `standard` or `smoke`.
    pub suite: String,
    /// When the suite finished, in seconds since the Unix epoch.
    pub created_unix_s: u64,
    pub host: Host,
    pub adapter: AdapterRecord,
    pub iterations: IterationsRecord,
    pub cases: Vec<CaseRecord>,
}

/// The machine the binary ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub os: String,
    pub arch: String,
}

/// The GPU adapter, as wgpu describes it, and the optional features the engine used on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterRecord {
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`, `Gl`, ...
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu`, ...
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
    /// `shader-f16`, `subgroups`, `mapped-uploads`: those the kernels used (less `--without`).
    pub features_used: Vec<String>,
}

/// How many calls each case made (see `Iterations`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationsRecord {
    pub warmup: usize,
    pub min_iters: usize,
    pub max_iters: usize,
    /// Timed calls stop once they add up to this (after `min_iters`).
    pub budget_s: f64,
}

/// What became of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It ran: the figures are there.
    Ok,
    /// The engine refused it or failed: `error` says why.
    Error,
    /// The suite does not run it on this path: `skipped` says why.
    Skipped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

/// One case of a suite: its stable id, the request, and the figures or the reason for none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Stable across runs and machines, e.g. `prefill_f32_l1024_causal_fused`.
    pub id: String,
    /// The block of the grid: `prefill`, `decode`, `decode_gqa`, `limit`.
    pub group: String,
    #[serde(flatten)]
    pub request: RequestFields,
    pub status: Status,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl CaseRecord {
    /// The figures of a case that ran.
    pub fn ran(&self) -> Option<&Figures> {
        match self.status {
            Status::Ok => self.figures.as_ref(),
            _ => None,
        }
    }

    /// `ok`, or the status and its reason.
    pub fn outcome(&self) -> String {
        match self.status {
            Status::Ok => "ok".into(),
            Status::Error => format!("error: {}", self.error.as_deref().unwrap_or("")),
            Status::Skipped => format!("skipped: {}", self.skipped.as_deref().unwrap_or("")),
        }
    }
}

impl Report {
    /// Reads and checks a report; every failure is one line naming the file.
    pub fn load(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read report {}", path.display()))?;
        Report::parse(&text).with_context(|| format!("{} is not a usable report", path.display()))
    }

    pub fn parse(text: &str) -> Result<Report> {
        // The format fields first, so a report of another version is named as such rather
        // than as a missing field.
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            format_version: Option<u32>,
        }
        let header: Header = serde_json::from_str(text).map_err(|e| anyhow!("bad JSON: {e}"))?;
        if header.format.as_deref() != Some(FORMAT) {
            bail!("its \"format\" is not {FORMAT:?}");
        }
        match header.format_version {
            Some(FORMAT_VERSION) => {}
            Some(v) => bail!(
                "format version {v}; this wgattn reads version {FORMAT_VERSION} (the version \
                 that wrote it can read it)"
            ),
            None => bail!("no \"format_version\""),
        }
        let report: Report = serde_json::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let mut ids = HashSet::new();
        for case in &report.cases {
            if !ids.insert(case.id.as_str()) {
                bail!("case {:?} appears twice", case.id);
            }
            if case.status == Status::Ok && case.figures.is_none() {
                bail!("case {:?} is ok but has no figures", case.id);
            }
        }
        Ok(report)
    }

    /// The report as indented JSON, ending in a newline.
    pub fn to_json(&self) -> Result<String> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        Ok(text)
    }

    /// `name (backend, device type)`, for headings.
    pub fn adapter_line(&self) -> String {
        let a = &self.adapter;
        format!("{} ({}, {})", a.name, a.backend, a.device_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> RequestFields {
        RequestFields {
            path: path.into(),
            batch: 1,
            q_heads: 2,
            kv_heads: 2,
            q_len: 16,
            kv_len: 16,
            head_dim: 8,
            v_dim: 8,
            dtype: "f32".into(),
            causal: false,
            window_left: -1,
            window_right: -1,
            softcap: 0.0,
            kv_lengths: Some(vec![12]),
            mask: "padding".into(),
            iters: 2,
            warmup: 1,
            resident: false,
        }
    }

    fn report() -> Report {
        Report {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            wgattn_version: "0.1.0".into(),
            suite: "smoke".into(),
            created_unix_s: 1,
            host: Host {
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            adapter: AdapterRecord {
                name: "llvmpipe".into(),
                backend: "Vulkan".into(),
                device_type: "Cpu".into(),
                driver: "llvmpipe".into(),
                driver_info: "Mesa".into(),
                vendor: 0x10005,
                device: 0,
                features_used: vec!["subgroups".into()],
            },
            iterations: IterationsRecord {
                warmup: 1,
                min_iters: 2,
                max_iters: 2,
                budget_s: 0.0,
            },
            cases: vec![
                CaseRecord {
                    id: "a".into(),
                    group: "prefill".into(),
                    request: request("fused"),
                    status: Status::Ok,
                    figures: Some(Figures {
                        median_ms: 1.5,
                        min_ms: 1.0,
                        max_ms: 2.0,
                        dense_flops: 16384.0,
                        gflops: 0.01,
                        gpu_bytes: 4096,
                        gpu_median_ms: None,
                        gpu_kernels: Vec::new(),
                    }),
                    error: None,
                    skipped: None,
                },
                CaseRecord {
                    id: "b".into(),
                    group: "prefill".into(),
                    request: request("staged"),
                    status: Status::Error,
                    figures: None,
                    error: Some("exceeds limit".into()),
                    skipped: None,
                },
                CaseRecord {
                    id: "c".into(),
                    group: "prefill".into(),
                    request: request("reference"),
                    status: Status::Skipped,
                    figures: None,
                    error: None,
                    skipped: Some("capped".into()),
                },
            ],
        }
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = report();
        let text = r.to_json().unwrap();
        assert_eq!(Report::parse(&text).unwrap(), r);
        // A case without figures has no figure keys at all.
        assert_eq!(text.matches("\"median_ms\"").count(), 1);
    }

    #[test]
    fn bad_reports_are_errors_not_panics() {
        let text = report().to_json().unwrap();
        for (bad, why) in [
            (text[..text.len() / 2].to_string(), "bad JSON"),
            ("[]".to_string(), "bad JSON"),
            ("{}".to_string(), "format"),
            (text.replace(FORMAT, "something-else"), "format"),
            (
                text.replace("\"format_version\": 1", "\"format_version\": 99"),
                "version 99",
            ),
            (text.replace("\"id\": \"b\"", "\"id\": \"a\""), "twice"),
            (text.replace("\"median_ms\": 1.5,", ""), "no figures"),
            (
                text.replace("\"status\": \"error\"", "\"status\": \"odd\""),
                "odd",
            ),
        ] {
            let e = Report::parse(&bad).expect_err(why);
            assert!(format!("{e:#}").contains(why), "{why}: {e:#}");
        }
    }
}
