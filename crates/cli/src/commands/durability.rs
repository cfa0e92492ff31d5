//! `datamesh durability`: the probability of losing a chunk per month and per
//! year for a k+m code under a node churn and a repair time, from the model
//! in `datamesh_core::durability`, checked by a Monte Carlo simulation of the
//! same process, with a warning when the code cannot reach 11 nines a year.
//!
//! Bad input exits with status 2 and says what is accepted; everything else
//! prints on stdout (one JSON document with `--json`), the warning on stderr.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use clap::error::ErrorKind;
use datamesh_core::durability::{
    self, Churn, ELEVEN_NINES, Estimate, MONTH_SECS, Params, Prob, Simulation, check_churn, estimate, simulate,
};
use serde_json::json;

/// The model predicts this many loss events per chunk-month where the
/// simulation checks it: enough to count.
const CHECK_EVENTS_PER_MONTH: f64 = 1.0;
/// At most this many simulated node failures per requested sample (4e7,
/// about a second of work, at the default 3000 samples).
const SIM_FAILURES_PER_SAMPLE: f64 = 13_000.0;
/// The model and the simulation must agree within this.
const AGREEMENT: f64 = 0.10;

/// `datamesh durability` options.
#[derive(Args)]
pub struct DurabilityArgs {
    /// Data shards: any k of the k+m rebuild a chunk.
    #[arg(short = 'k', long, default_value_t = 4)]
    k: u16,
    /// Parity shards: a chunk survives losing up to m at once (k+m ≤ 256).
    #[arg(short = 'm', long, default_value_t = 2)]
    m: u16,
    /// Nodes in the network (at least k+m: shards sit on distinct nodes).
    #[arg(long)]
    nodes: u64,
    /// Node failure rate: PERCENT%/UNIT (10%/month, 120%/year) or FRACTION/UNIT (0.1/month); UNIT hour, day,
    /// week, month (default) or year.
    #[arg(long, value_parser = parse_churn)]
    churn: Churn,
    /// Time from a node's failure to its shards rebuilt elsewhere (e.g. 1h, 30m, 2h30m).
    #[arg(long, default_value = "1h", value_parser = parse_repair_time)]
    repair_time: Duration,
    /// Chunks the Monte Carlo check simulates, one month each.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    samples: u64,
    /// Seed of the Monte Carlo check (the output is reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_churn(s: &str) -> Result<Churn, String> {
    s.parse::<Churn>().map_err(|e| e.to_string())
}

fn parse_repair_time(s: &str) -> Result<Duration, String> {
    let accepted = "accepted: a duration of more than 0 and at most 1 year, e.g. 1h, 30m, 90s, 2h30m, 1day";
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}; {accepted}"))?;
    if d.is_zero() || d.as_secs_f64() > durability::MAX_REPAIR_SECS {
        return Err(format!("`{s}` is out of range; {accepted}"));
    }
    Ok(d)
}

/// The Monte Carlo check: where it ran and what it saw.
struct Check {
    params: Params,
    model_events: f64,
    sim: Simulation,
}

impl Check {
    fn simulated(&self) -> f64 {
        self.sim.loss_events_per_month()
    }
    fn difference(&self) -> f64 {
        self.simulated() / self.model_events - 1.0
    }
    fn relative_std_err(&self) -> f64 {
        self.sim.loss_events_per_month_std_err() / self.model_events
    }
    fn verdict(&self) -> Verdict {
        let d = self.difference().abs();
        if d <= AGREEMENT {
            Verdict::Agrees
        } else if 3.0 * self.relative_std_err() > AGREEMENT && d <= AGREEMENT + 3.0 * self.relative_std_err() {
            Verdict::Inconclusive
        } else {
            Verdict::Disagrees
        }
    }
}

/// What the check concluded.
#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    /// Within 10%.
    Agrees,
    /// Outside 10% but the simulation is too noisy to tell (too few samples).
    Inconclusive,
    /// Outside 10% beyond the simulation's noise: the model or the code is wrong.
    Disagrees,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Disagrees => "disagrees",
        }
    }
}

/// Runs the check at the given churn if losses are countable there, else at
/// the churn inflated until the model predicts about one loss a chunk-month.
fn check(p: &Params, samples: u64, seed: u64) -> Option<Check> {
    let churn = check_churn(p, CHECK_EVENTS_PER_MONTH)?;
    let params = p.with_churn(churn);
    let model_events = estimate(&params).loss_events_per_month;
    // Past the target, shorten the span so the work stays bounded.
    let horizon = MONTH_SECS * (CHECK_EVENTS_PER_MONTH / model_events).min(1.0);
    let failures_per_chunk = (p.k() as f64 + p.m() as f64) * churn.rate_per_sec() * horizon;
    let budget = SIM_FAILURES_PER_SAMPLE * samples as f64;
    let chunks = (samples as f64).min((budget / failures_per_chunk).max(100.0)) as u64;
    let sim = simulate(&params, horizon, chunks, seed);
    Some(Check { params, model_events, sim })
}

fn fmt_duration(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.round().max(1.0) as u64)).to_string()
}

/// Says how to reach 11 nines, when the given code does not.
fn warning(p: &Params, e: &Estimate) -> Option<(String, Option<u16>, Option<f64>)> {
    if e.meets_eleven_nines() {
        return None;
    }
    let min_m = durability::min_m_for(p, ELEVEN_NINES);
    let max_repair = durability::max_repair_secs_for(p, ELEVEN_NINES);
    let mut fixes = Vec::new();
    if let Some(m) = min_m {
        fixes.push(format!("a {}+{m} code", p.k()));
    }
    if let Some(t) = max_repair {
        fixes.push(format!("repairs within {}", fmt_duration(t)));
    }
    let fixes = if fixes.is_empty() { String::new() } else { format!("; {} would", fixes.join(" or ")) };
    let text = format!(
        "{}+{} cannot reach 11 nines a year at churn {} with {} repairs (annual loss probability {} > 1e-11){fixes}",
        p.k(),
        p.m(),
        p.churn(),
        fmt_duration(p.repair_secs()),
        e.per_year,
    );
    Some((text, min_m, max_repair))
}

fn prob_json(p: Prob) -> serde_json::Value {
    json!({ "p": p.p, "log10": p.log10 })
}

/// Runs the command.
pub fn run(a: DurabilityArgs) -> Result<()> {
    let p = match Params::new(a.k, a.m, a.nodes, a.churn, a.repair_time.as_secs_f64()) {
        Ok(p) => p,
        Err(e) => clap::Error::raw(ErrorKind::ValueValidation, format!("{e}\n")).exit(),
    };
    let e = estimate(&p);
    let check = check(&p, a.samples, a.seed);
    let warn = warning(&p, &e);
    if a.json {
        let mc = check.as_ref().map(|c| {
            json!({
                "churn_per_month": c.params.churn().rate_per_month(),
                "inflated": c.params.churn() != p.churn(),
                "chunks": c.sim.chunks,
                "months_per_chunk": c.sim.horizon_secs / MONTH_SECS,
                "model_events_per_chunk_month": c.model_events,
                "simulated_events_per_chunk_month": c.simulated(),
                "std_err": c.sim.loss_events_per_month_std_err(),
                "relative_difference": c.difference(),
                "relative_std_err": c.relative_std_err(),
                "verdict": c.verdict().as_str(),
            })
        });
        let doc = json!({
            "k": p.k(),
            "m": p.m(),
            "nodes": p.nodes(),
            "churn_per_month": p.churn().rate_per_month(),
            "repair_time_secs": p.repair_secs(),
            "node_failure_per_window": e.node_failure_per_window,
            "shard_down": e.shard_down,
            "loss_events_per_month": e.loss_events_per_month,
            "loss_per_window": prob_json(e.per_window),
            "loss_per_month": prob_json(e.per_month),
            "loss_per_year": prob_json(e.per_year),
            "nines_per_year": e.per_year.nines(),
            "fixed_window_loss_per_year": prob_json(e.fixed_window_per_year),
            "eleven_nines": e.meets_eleven_nines(),
            "monte_carlo": mc,
            "warning": warn.as_ref().map(|w| w.0.clone()),
            "min_m_for_eleven_nines": warn.as_ref().and_then(|w| w.1),
            "max_repair_secs_for_eleven_nines": warn.as_ref().and_then(|w| w.2),
        });
        println!("{doc}");
    } else {
        println!(
            "{}+{} code on {} nodes, churn {}, repairs within {}",
            p.k(),
            p.m(),
            p.nodes(),
            p.churn(),
            fmt_duration(p.repair_secs())
        );
        println!(
            "model: nodes fail independently (Poisson); a chunk is lost when more than {} of its {} shards are down at once",
            p.m(),
            p.k() as usize + p.m() as usize
        );
        println!("  a node fails within one repair time   {:.3e}", e.node_failure_per_window);
        println!("  chunk loss probability per month      {}", e.per_month);
        println!("  chunk loss probability per year       {}  ({:.1} nines)", e.per_year, e.per_year.nines());
        println!("  (fixed repair windows would say       {} a year: a lower bound)", e.fixed_window_per_year);
        match &check {
            Some(c) => {
                let at = if c.params.churn() == p.churn() {
                    "the given churn".to_owned()
                } else {
                    format!("churn {}, inflated until losses are countable", c.params.churn())
                };
                println!("Monte Carlo check ({} chunks at {at}):", c.sim.chunks);
                println!(
                    "  loss events per chunk-month: model {:.3}, simulated {:.3} ± {:.3} ({:+.1}%): {}",
                    c.model_events,
                    c.simulated(),
                    c.sim.loss_events_per_month_std_err(),
                    100.0 * c.difference(),
                    match c.verdict() {
                        Verdict::Agrees => "agrees within 10%",
                        Verdict::Inconclusive => "inconclusive: too few samples to resolve 10%",
                        Verdict::Disagrees => "DISAGREES by more than 10%",
                    }
                );
            }
            None => println!("Monte Carlo check: no churn makes losses countable for this code; not checked"),
        }
    }
    if let Some(c) = &check
        && c.verdict() != Verdict::Agrees
    {
        eprintln!(
            "warning: the simulation differs from the model by {:+.1}% (standard error {:.1}%){}",
            100.0 * c.difference(),
            100.0 * c.relative_std_err(),
            if c.verdict() == Verdict::Inconclusive { "; more --samples resolve it" } else { "" }
        );
    }
    if let Some((text, _, _)) = warn {
        eprintln!("warning: {text}");
    }
    Ok(())
}
