//! `datamesh durability`: the real binary, its figures against values worked
//! out by hand, its Monte Carlo check, the 11-nines warning, and refusals of
//! bad input with exit status 2.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_datamesh")).arg("durability").args(args).output().unwrap()
}

fn json(args: &[&str]) -> (Value, String) {
    let mut a = args.to_vec();
    a.push("--json");
    let o = run(&a);
    let stdout = String::from_utf8(o.stdout).unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{args:?}: {stderr}");
    (serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}")), stderr)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    ((a - b) / b).abs() <= rel
}

/// 4+2, 10%/month, 1 h repairs. By hand: λT = 0.1/730 = 1.36986e-4 failures
/// per node per repair time; q = λT/(1+λT) ≈ 1.36967e-4; a loss starts when
/// one of the 4 up shards fails while exactly 2 of 6 are down:
/// r·T = λT · 4 · C(6,2) · q² · (1−q)⁴ = 1.36986e-4 · 60 · 1.87600e-8 · 0.999452
/// = 1.54108e-10 per hour, so 1.1250e-7 a month (×730) and 1.3500e-6 a year
/// (×8760; 1 − e^(−x) = x at this size).
/// That misses 11 nines by five orders of magnitude: the command must warn.
#[test]
fn four_plus_two_at_ten_percent_a_month_warns() {
    let (v, stderr) = json(&["--k", "4", "--m", "2", "--nodes", "100", "--churn", "10%/month", "--repair-time", "1h"]);
    let year = v["loss_per_year"]["p"].as_f64().unwrap();
    let month = v["loss_per_month"]["p"].as_f64().unwrap();
    assert!(close(year, 1.3500e-6, 1e-3), "per year {year}");
    assert!(close(month, 1.1250e-7, 1e-3), "per month {month}");
    assert!(close(v["node_failure_per_window"].as_f64().unwrap(), 1.36977e-4, 1e-4));
    assert_eq!(v["eleven_nines"], false);
    assert!(v["warning"].as_str().unwrap().contains("11 nines"));
    assert!(stderr.contains("warning: 4+2 cannot reach 11 nines a year"), "{stderr}");
    // The suggested fixes do reach it: more parity, or faster repairs (loss
    // ∝ T² for m = 2, so T ≈ 3600 s / sqrt(1.35e-6 / 1e-11) ≈ 10 s).
    let m = v["min_m_for_eleven_nines"].as_u64().unwrap();
    assert!(m > 2);
    let t = v["max_repair_secs_for_eleven_nines"].as_f64().unwrap();
    assert!(close(t, 3600.0 / (1.35e-6f64 / 1e-11).sqrt(), 0.02), "{t}");
    let (better, stderr) = json(&["--k", "4", "--m", &m.to_string(), "--nodes", "100", "--churn", "10%/month"]);
    assert_eq!(better["eleven_nines"], true);
    assert!(!stderr.contains("warning"), "{stderr}");
    // The Monte Carlo check ran at an inflated churn and agrees within 10%.
    let mc = &v["monte_carlo"];
    assert_eq!(mc["inflated"], true);
    assert_eq!(mc["verdict"], "agrees", "{mc}");
    let sim = mc["simulated_events_per_chunk_month"].as_f64().unwrap();
    let model = mc["model_events_per_chunk_month"].as_f64().unwrap();
    assert!(close(sim, model, 0.10), "{mc}");
}

/// 10+20 survives 20 simultaneous losses: by hand, log10 of the yearly loss
/// is log10(8760 · λT · 10 · C(30,20)) + 20·log10(q) + 10·log10(1−q) ≈ −68.7,
/// far beyond 11 nines, and still computed (not rounded to 0).
#[test]
fn ten_plus_twenty_reaches_eleven_nines() {
    let (v, stderr) = json(&["--k", "10", "--m", "20", "--nodes", "100", "--churn", "10%/month"]);
    let lt: f64 = 0.1 / 730.0;
    let q = lt / (1.0 + lt);
    let log10_year = (8760.0 * lt * 10.0 * 30_045_015.0f64).log10() + 20.0 * q.log10() + 10.0 * (1.0 - q).log10();
    let got = v["loss_per_year"]["log10"].as_f64().unwrap();
    assert!((got - log10_year).abs() < 1e-6, "{got} vs {log10_year}");
    assert!(v["loss_per_year"]["p"].as_f64().unwrap() > 0.0);
    assert_eq!(v["eleven_nines"], true);
    assert_eq!(v["warning"], Value::Null);
    assert!(!stderr.contains("11 nines"), "{stderr}");
    assert_eq!(v["monte_carlo"]["verdict"], "agrees", "{}", v["monte_carlo"]);
}

#[test]
fn plain_output_and_units() {
    let o = run(&["--nodes", "100", "--churn", "10%/month"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    for want in ["4+2 code on 100 nodes", "per month", "per year", "nines", "Monte Carlo", "agrees within 10%"] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
    assert!(String::from_utf8(o.stderr).unwrap().contains("11 nines"));
    // The same rate written three ways gives the same figures.
    let base = json(&["--nodes", "100", "--churn", "10%/month"]).0["loss_per_year"]["log10"].as_f64().unwrap();
    for churn in ["0.1/month", "120%/year", "10%"] {
        let v = json(&["--nodes", "100", "--churn", churn]).0;
        assert!((v["loss_per_year"]["log10"].as_f64().unwrap() - base).abs() < 1e-9, "{churn}");
    }
}

#[test]
fn bad_input_exits_2_saying_what_is_accepted() {
    for (args, says) in [
        (&["--nodes", "100", "--churn", "120/year"][..], "must be at most 1"),
        (&["--nodes", "100", "--churn", "5%/fortnight"], "UNIT one of"),
        (&["--nodes", "100", "--churn=-3%/month"], "must be positive"),
        (&["--nodes", "100", "--churn", "0%/month"], "must be positive"),
        (&["--nodes", "100", "--churn", "10%", "--repair-time", "0s"], "accepted"),
        (&["--nodes", "100", "--churn", "10%", "--repair-time", "soon"], "accepted"),
        (&["--k", "0", "--nodes", "100", "--churn", "10%"], "k must be at least 1"),
        (&["--m", "300", "--nodes", "1000", "--churn", "10%"], "at most 256"),
        (&["--k", "10", "--m", "20", "--nodes", "29", "--churn", "10%"], "at least k+m = 30"),
        (&["--nodes", "100"], "--churn"),
    ] {
        let o = run(args);
        let stderr = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: no `{says}` in {stderr}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}
