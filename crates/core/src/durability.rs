//! The durability model: how likely a chunk coded k+m is to be lost under a
//! given node churn and repair time, computed analytically and checked by a
//! Monte Carlo simulation of the same process. Pure math, no IO.
//!
//! # The process
//!
//! - A chunk has `n = k + m` shards on `n` distinct nodes; any `k` rebuild it.
//! - Each node holding a shard fails (dies, leaves, loses its disk) as a
//!   Poisson process of rate `λ` = the churn: `10%/month` means 0.1 expected
//!   failures per node per month. Nodes fail independently of each other.
//! - A shard lost with its node is rebuilt on another node exactly `T` (the
//!   repair time) after the failure: "repair completes within the window",
//!   taken at its worst. The new holder fails at rate `λ` like any node.
//! - The chunk is lost at the first moment more than `m` of its shards are
//!   down at once (`m + 1` failures within a span shorter than `T`).
//!
//! The network size `N` enters only through placement (`n ≤ N` distinct
//! nodes): with independent failures, a chunk's fate depends on its own `n`
//! holders. `N` matters to *how many* chunks are lost together, not to the
//! probability that a given one is.
//!
//! # The result
//!
//! Each shard alternates between up (exponential, mean `1/λ`) and down
//! (exactly `T`), independently of the others, so in steady state it is down
//! with probability `q = λT / (1 + λT)`. A loss begins when a shard fails while
//! exactly `m` others are down; since up times are memoryless, the rate of
//! such events is exact:
//!
//! ```text
//! r = λ · (n − m) · P(B = m),   B ~ Binomial(n, q)
//!   = λ · (n − m) · C(n, m) · q^m · (1 − q)^(n − m)
//! P(lose the chunk within t) = 1 − exp(−r·t)
//! ```
//!
//! The last line treats loss events as a Poisson process. That holds to
//! `O(nλT)` relative error, below 1e-3 for realistic churn and repair times.
//! The error is on the safe side: loss events cluster when repairs overlap, so
//! first losses are rarer than `r` counts them, and `r·t` (the expected number
//! of loss events) bounds the probability from above in any case.
//!
//! Everything is computed in log space (`ln r` from sums of logs, `ln_1p`,
//! `exp_m1`), so a loss probability of 1e-70 is as accurate as one of 1e-2,
//! and probabilities below `f64`'s range are still reported as `log10`.
//!
//! ## Why not fixed windows
//!
//! Cutting time into fixed windows of length `T` and asking for more than `m`
//! failures within one window, `P(Binomial(n, p) > m)` with `p = 1 − e^(−λT)`,
//! misses the `m + 1` failures that straddle a window boundary. It is a true
//! lower bound (`m + 1` failures inside one window always overlap in the
//! process above) but undercounts by about a factor `m + 1`: 3× for 4+2, 21×
//! for 10+20. [`fixed_window_loss`] computes it for comparison.
//!
//! # Assumptions (what the model does not capture)
//!
//! - Failures are independent: no correlated outages (a rack, a region, a
//!   software release, an operator). Correlated failures dominate real data
//!   loss; spread shards across failure domains.
//! - Detection is included in `T`: `T` is failure to shard rebuilt, including
//!   the OFFLINE timer.
//! - Repair always succeeds within `T`, however many shards are down, as long
//!   as `k` remain; repair bandwidth is not a bottleneck.
//! - No silent corruption: scrub and audits turn bit rot into failures that
//!   the same repair fixes; add their rate to the churn if it matters.
//! - A month is a twelfth of a 365-day year (730 hours).
//!
//! # Units
//!
//! A churn is a rate, written `PERCENT%/UNIT` (`10%/month`, `120%/year`,
//! `5%/week`; above 100% means nodes fail more than once per unit on average)
//! or `FRACTION/UNIT` with the fraction at most 1 (`0.1/month`); UNIT is hour,
//! day, week, month or year, month when left out. A bare number above 1
//! (`120/year`: nodes? percent?) is refused rather than guessed.
//!
//! # The Monte Carlo check
//!
//! [`simulate`] runs the process itself (exponential failure times, exact
//! repair delays, a count of down shards) from its steady state and counts
//! loss events, independently of the closed form. Realistic parameters give
//! probabilities like 1e-7 a month that no simulation can measure, so the
//! check runs where the same formula predicts about one loss event per chunk
//! and month ([`check_churn`]: the churn inflated until it is measurable) and
//! compares the rate `r`, which is exact at any churn. Since the formula is
//! one expression in `λ`, agreement there checks the expression and the code
//! that evaluates it; the tiny figures follow from the same expression.

use std::fmt;
use std::str::FromStr;

use crate::limits::MAX_TOTAL_SHARDS;

/// Seconds in a 365-day year.
pub const YEAR_SECS: f64 = 365.0 * 86_400.0;
/// Seconds in a month, a twelfth of a year (730 hours).
pub const MONTH_SECS: f64 = YEAR_SECS / 12.0;
/// The usual durability target: annual loss probability at most 1e-11
/// ("eleven nines").
pub const ELEVEN_NINES: f64 = 1e-11;
/// Longest repair time the model accepts: one year.
pub const MAX_REPAIR_SECS: f64 = YEAR_SECS;

/// A churn rate: expected failures per node per month.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    per_month: f64,
}

impl Churn {
    /// A churn of `per_month` expected failures per node per month; `None`
    /// unless positive and finite.
    pub fn per_month(per_month: f64) -> Option<Churn> {
        (per_month.is_finite() && per_month > 0.0).then_some(Churn { per_month })
    }

    /// Expected failures per node per month.
    pub fn rate_per_month(&self) -> f64 {
        self.per_month
    }

    /// Expected failures per node per second.
    pub fn rate_per_sec(&self) -> f64 {
        self.per_month / MONTH_SECS
    }
}

impl fmt::Display for Churn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%/month", fmt_sig(self.per_month * 100.0))
    }
}

/// Why a churn string is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "churn `{input}`: {reason}; accepted: PERCENT%/UNIT (a rate, e.g. 10%/month, 120%/year) or FRACTION/UNIT \
     with 0 < FRACTION ≤ 1 (e.g. 0.1/month), UNIT one of hour, day, week, month, year (default month)"
)]
pub struct ChurnError {
    input: String,
    reason: &'static str,
}

impl FromStr for Churn {
    type Err = ChurnError;

    /// `10%/month`, `0.1/month`, `5%/week`, `120%/year`, `10%` (per month).
    /// A number without `%` is a fraction of the nodes and must be at most 1,
    /// so that `120/year` (a count of nodes?) is refused rather than guessed.
    fn from_str(s: &str) -> Result<Churn, ChurnError> {
        let err = |reason| ChurnError { input: s.to_owned(), reason };
        let t = s.trim();
        let (num, unit) = match t.split_once('/') {
            Some((n, u)) => (n.trim(), u.trim()),
            None => (t, "month"),
        };
        let (num, percent) = match num.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (num, false),
        };
        let v: f64 = num.parse().map_err(|_| err("not a number"))?;
        if !v.is_finite() || v <= 0.0 {
            return Err(err("must be positive"));
        }
        if !percent && v > 1.0 {
            return Err(err("a number without % is a fraction of the nodes and must be at most 1"));
        }
        let rate = if percent { v / 100.0 } else { v };
        let unit_secs = match unit.to_ascii_lowercase().trim_end_matches('s') {
            "h" | "hour" | "hr" => 3600.0,
            "d" | "day" => 86_400.0,
            "w" | "week" | "wk" => 7.0 * 86_400.0,
            "mo" | "month" => MONTH_SECS,
            "y" | "year" | "yr" => YEAR_SECS,
            _ => return Err(err("unknown unit")),
        };
        Churn::per_month(rate * MONTH_SECS / unit_secs).ok_or_else(|| err("out of range"))
    }
}

/// What the model is asked about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    k: u16,
    m: u16,
    nodes: u64,
    churn: Churn,
    repair_secs: f64,
}

/// Why parameters are refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// `k` must be at least 1.
    #[error("k must be at least 1 (data shards; any k of the k+m rebuild a chunk)")]
    ZeroK,
    /// `k + m` is above what the erasure code supports.
    #[error("k+m = {0} shards; the erasure code supports at most {MAX_TOTAL_SHARDS}")]
    TooManyShards(usize),
    /// Fewer nodes than shards: no distinct placement.
    #[error("{nodes} nodes cannot hold {shards} shards on distinct nodes; --nodes must be at least k+m = {shards}")]
    TooFewNodes {
        /// Nodes given.
        nodes: u64,
        /// k+m.
        shards: usize,
    },
    /// Repair time not in (0, 1 year].
    #[error("repair time must be more than 0 and at most one year")]
    RepairTime,
}

impl Params {
    /// Checks and builds the parameters.
    pub fn new(k: u16, m: u16, nodes: u64, churn: Churn, repair_secs: f64) -> Result<Params, ParamsError> {
        let shards = k as usize + m as usize;
        if k == 0 {
            return Err(ParamsError::ZeroK);
        }
        if shards > MAX_TOTAL_SHARDS {
            return Err(ParamsError::TooManyShards(shards));
        }
        if nodes < shards as u64 {
            return Err(ParamsError::TooFewNodes { nodes, shards });
        }
        if !(repair_secs > 0.0 && repair_secs <= MAX_REPAIR_SECS) {
            return Err(ParamsError::RepairTime);
        }
        Ok(Params { k, m, nodes, churn, repair_secs })
    }

    /// Data shards.
    pub fn k(&self) -> u16 {
        self.k
    }
    /// Parity shards.
    pub fn m(&self) -> u16 {
        self.m
    }
    /// Nodes in the network.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }
    /// The churn.
    pub fn churn(&self) -> Churn {
        self.churn
    }
    /// Repair time in seconds.
    pub fn repair_secs(&self) -> f64 {
        self.repair_secs
    }
    /// The same with another churn.
    pub fn with_churn(&self, churn: Churn) -> Params {
        Params { churn, ..*self }
    }
    /// The same with another repair time (unchecked bounds are the caller's).
    fn with_repair_secs(&self, repair_secs: f64) -> Params {
        Params { repair_secs, ..*self }
    }
    fn n(&self) -> usize {
        self.k as usize + self.m as usize
    }
    /// `λT`: expected failures of one node within one repair time.
    fn lambda_t(&self) -> f64 {
        self.churn.rate_per_sec() * self.repair_secs
    }
}

/// A probability kept with its base-10 logarithm, which stays exact where
/// the probability itself underflows `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prob {
    /// The probability (0 if below `f64`'s range).
    pub p: f64,
    /// `log10(p)`.
    pub log10: f64,
}

impl Prob {
    /// The probability of at least one event of a Poisson process whose
    /// expected count is `exp(ln_expected)`: `1 − exp(−e)`, accurate for any
    /// size of `e`.
    pub fn from_ln_expected(ln_expected: f64) -> Prob {
        if ln_expected < -30.0 {
            // 1 − e^(−x) = x (1 − x/2 + …): relative error below 1e-13.
            return Prob { p: ln_expected.exp(), log10: ln_expected / std::f64::consts::LN_10 };
        }
        let p = -(-ln_expected.exp()).exp_m1();
        Prob { p, log10: p.log10() }
    }

    /// Nines of durability: `−log10(p)`.
    pub fn nines(&self) -> f64 {
        -self.log10
    }
}

impl fmt::Display for Prob {
    /// `1.23e-7`, also below `f64`'s range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.p >= 0.01 {
            return write!(f, "{:.3}", self.p);
        }
        let e = self.log10.floor();
        let mut mant = 10f64.powf(self.log10 - e);
        let mut e = e as i64;
        if mant >= 9.995 {
            mant /= 10.0;
            e += 1;
        }
        write!(f, "{mant:.2}e{e}")
    }
}

/// What the model says about one set of parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Probability that one node fails within one repair time, `1 − e^(−λT)`.
    pub node_failure_per_window: f64,
    /// Steady-state probability that a shard is down (being repaired), `q`.
    pub shard_down: f64,
    /// `ln r`: natural log of loss events per chunk per second.
    pub ln_loss_rate: f64,
    /// Expected loss events per chunk per month, `r · month`.
    pub loss_events_per_month: f64,
    /// Probability of losing the chunk within one repair time.
    pub per_window: Prob,
    /// Probability of losing the chunk within a month.
    pub per_month: Prob,
    /// Probability of losing the chunk within a year.
    pub per_year: Prob,
    /// The fixed-window binomial figure for a year (a lower bound; see the
    /// module docs).
    pub fixed_window_per_year: Prob,
}

impl Estimate {
    /// Whether the annual loss probability is at most 1e-11.
    pub fn meets_eleven_nines(&self) -> bool {
        self.per_year.log10 <= ELEVEN_NINES.log10()
    }
}

/// `ln C(n, j)`, exact enough for `n ≤ 256`.
fn ln_choose(n: usize, j: usize) -> f64 {
    let j = j.min(n - j);
    (1..=j).map(|i| ((n - j + i) as f64 / i as f64).ln()).sum()
}

/// `ln(Σ exp(x_i))` without overflow or underflow.
fn ln_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// `ln P(X > m)` for `X ~ Binomial(n, p)`, from `ln p` and `ln(1 − p)`,
/// summing the tail terms in log space (no `1 − P(X ≤ m)` cancellation).
pub fn ln_binomial_tail(n: usize, m: usize, ln_p: f64, ln_1mp: f64) -> f64 {
    if m >= n {
        return f64::NEG_INFINITY;
    }
    ln_sum_exp((m + 1..=n).map(|j| ln_choose(n, j) + j as f64 * ln_p + (n - j) as f64 * ln_1mp))
}

/// `ln r`, loss events per chunk per second (module docs).
pub fn ln_loss_rate(p: &Params) -> f64 {
    let (n, m) = (p.n(), p.m as usize);
    let lt = p.lambda_t();
    let ln_1p = lt.ln_1p();
    let ln_q = lt.ln() - ln_1p; // q = λT / (1 + λT)
    let ln_1mq = -ln_1p; //        1 − q = 1 / (1 + λT)
    p.churn.rate_per_sec().ln() + ((n - m) as f64).ln() + ln_choose(n, m) + m as f64 * ln_q + (n - m) as f64 * ln_1mq
}

/// The fixed-window binomial figure: probability that, in some window of a
/// span of `secs` cut into windows of the repair time, more than `m` of the
/// `n` nodes fail. A lower bound of the loss probability (module docs).
pub fn fixed_window_loss(p: &Params, secs: f64) -> Prob {
    let lt = p.lambda_t();
    // p = 1 − e^(−λT); ln p = ln(−expm1(−λT)); ln(1 − p) = −λT.
    let ln_pw = ln_binomial_tail(p.n(), p.m as usize, (-(-lt).exp_m1()).ln(), -lt);
    let windows = secs / p.repair_secs;
    // P = 1 − (1 − Pw)^W = 1 − exp(W · ln(1 − Pw)); expected "count" −W·ln(1 − Pw).
    let ln_per_window = if ln_pw < -30.0 { ln_pw } else { (-(-ln_pw.exp()).ln_1p()).ln() };
    Prob::from_ln_expected(windows.ln() + ln_per_window)
}

/// The model's answer for `p`.
pub fn estimate(p: &Params) -> Estimate {
    let ln_r = ln_loss_rate(p);
    let lt = p.lambda_t();
    Estimate {
        node_failure_per_window: -(-lt).exp_m1(),
        shard_down: lt / (1.0 + lt),
        ln_loss_rate: ln_r,
        loss_events_per_month: (ln_r + MONTH_SECS.ln()).exp(),
        per_window: Prob::from_ln_expected(ln_r + p.repair_secs.ln()),
        per_month: Prob::from_ln_expected(ln_r + MONTH_SECS.ln()),
        per_year: Prob::from_ln_expected(ln_r + YEAR_SECS.ln()),
        fixed_window_per_year: fixed_window_loss(p, YEAR_SECS),
    }
}

/// The longest repair time (seconds, up to one year) at which the annual
/// loss probability is at most `target`; `None` if even one second misses it.
pub fn max_repair_secs_for(p: &Params, target: f64) -> Option<f64> {
    let meets = |t: f64| estimate(&p.with_repair_secs(t)).per_year.log10 <= target.log10();
    if !meets(1.0) {
        return None;
    }
    if meets(MAX_REPAIR_SECS) {
        return Some(MAX_REPAIR_SECS);
    }
    // Loss grows with the repair time: bisect on its log.
    let (mut lo, mut hi) = (0f64, MAX_REPAIR_SECS.ln());
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if meets(mid.exp()) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo.exp())
}

/// The fewest parity shards with this `k` that reach `target` a year (within
/// the shard limit and the node count); `None` if none does.
pub fn min_m_for(p: &Params, target: f64) -> Option<u16> {
    let max_m = (MAX_TOTAL_SHARDS as u64).min(p.nodes).saturating_sub(p.k as u64) as u16;
    (0..=max_m).find(|&m| estimate(&Params { m, ..*p }).per_year.log10 <= target.log10())
}

/// The churn at which the model predicts `target` loss events per chunk per
/// month (at least the given churn): where a simulation can measure them.
/// `None` if no churn up to 1e9× the given one gets there.
pub fn check_churn(p: &Params, target_events_per_month: f64) -> Option<Churn> {
    let events = |ln_c: f64| {
        let c = Churn { per_month: ln_c.exp() };
        (ln_loss_rate(&p.with_churn(c)) + MONTH_SECS.ln()).exp()
    };
    let lo0 = p.churn.per_month.ln();
    if events(lo0) >= target_events_per_month {
        return Some(p.churn);
    }
    // The rate grows with the churn until most shards are down; find a bracket
    // by stepping up, then bisect.
    let (mut lo, mut hi) = (lo0, lo0);
    loop {
        hi += 0.5;
        if hi > lo0 + 9.0 * std::f64::consts::LN_10 {
            return None;
        }
        if events(hi) >= target_events_per_month {
            break;
        }
        lo = hi;
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if events(mid) >= target_events_per_month {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Churn::per_month(hi.exp())
}

/// What a Monte Carlo run observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulation {
    /// Chunks simulated, each for `horizon_secs`.
    pub chunks: u64,
    /// Simulated span per chunk, seconds.
    pub horizon_secs: f64,
    /// Chunks that were lost at least once within the span.
    pub chunks_lost: u64,
    /// Loss events in all (a chunk may have several, clustered).
    pub loss_events: u64,
    /// Node failures simulated (the work done).
    pub failures: u64,
    /// Standard error of the mean loss events per chunk.
    pub events_std_err: f64,
}

impl Simulation {
    /// Mean loss events per chunk per month.
    pub fn loss_events_per_month(&self) -> f64 {
        self.loss_events as f64 / self.chunks as f64 * MONTH_SECS / self.horizon_secs
    }
    /// Standard error of [`Self::loss_events_per_month`].
    pub fn loss_events_per_month_std_err(&self) -> f64 {
        self.events_std_err * MONTH_SECS / self.horizon_secs
    }
    /// Fraction of chunks lost within the span.
    pub fn lost_fraction(&self) -> f64 {
        self.chunks_lost as f64 / self.chunks as f64
    }
}

/// SplitMix64: small, fast, reproducible from a seed. Statistical quality is
/// ample for this; it is not for anything secret.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    /// Exponential with the given rate.
    fn exp(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}

/// A pending change of one shard, ordered by time (earliest first in a
/// `BinaryHeap`).
#[derive(PartialEq)]
struct Pending {
    at: f64,
    shard: usize,
}
impl Eq for Pending {}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.total_cmp(&self.at)
    }
}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Simulates `chunks` independent chunks for `horizon_secs` each, by running
/// the process of the module docs event by event (not the formula): every
/// shard starts in its steady state (down with probability `q`, its repair
/// then due uniformly within `T`), holders fail after exponential times,
/// repairs take exactly `T`, and a loss event is a failure that leaves more
/// than `m` shards down. Deterministic for a given `seed`.
pub fn simulate(p: &Params, horizon_secs: f64, chunks: u64, seed: u64) -> Simulation {
    let mut rng = SplitMix64(seed);
    let (n, m) = (p.n(), p.m as usize);
    let lambda = p.churn.rate_per_sec();
    let t = p.repair_secs;
    let q = p.lambda_t() / (1.0 + p.lambda_t());
    let mut down = vec![false; n];
    let mut heap = std::collections::BinaryHeap::with_capacity(n);
    let (mut lost, mut events, mut failures) = (0u64, 0u64, 0u64);
    let (mut sum, mut sum_sq) = (0f64, 0f64);
    for _ in 0..chunks {
        heap.clear();
        let mut n_down = 0usize;
        for (shard, d) in down.iter_mut().enumerate() {
            *d = rng.unit() <= q;
            let at = if *d {
                n_down += 1;
                rng.unit() * t
            } else {
                rng.exp(lambda)
            };
            heap.push(Pending { at, shard });
        }
        let mut chunk_events = 0u64;
        while let Some(Pending { at, shard }) = heap.pop() {
            if at > horizon_secs {
                break;
            }
            if down[shard] {
                down[shard] = false;
                n_down -= 1;
                heap.push(Pending { at: at + rng.exp(lambda), shard });
            } else {
                down[shard] = true;
                n_down += 1;
                failures += 1;
                if n_down == m + 1 {
                    chunk_events += 1;
                }
                heap.push(Pending { at: at + t, shard });
            }
        }
        if chunk_events > 0 {
            lost += 1;
        }
        events += chunk_events;
        sum += chunk_events as f64;
        sum_sq += (chunk_events as f64).powi(2);
    }
    let c = chunks.max(1) as f64;
    let var = if chunks > 1 { (sum_sq - sum * sum / c) / (c - 1.0) } else { 0.0 };
    Simulation {
        chunks,
        horizon_secs,
        chunks_lost: lost,
        loss_events: events,
        failures,
        events_std_err: (var.max(0.0) / c).sqrt(),
    }
}

/// The number of significant digits a figure deserves in text.
fn fmt_sig(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(k: u16, m: u16, churn: &str, repair_secs: f64) -> Params {
        Params::new(k, m, 1000, churn.parse().unwrap(), repair_secs).unwrap()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        ((a - b) / b).abs() <= rel
    }

    #[test]
    fn churn_units() {
        let c = |s: &str| s.parse::<Churn>().map(|c| c.rate_per_month());
        assert_eq!(c("10%/month").unwrap(), 0.1);
        assert_eq!(c("0.1/month").unwrap(), 0.1);
        assert_eq!(c("10%").unwrap(), 0.1);
        assert_eq!(c(" 10 % / months ").unwrap(), 0.1);
        assert!(close(c("120%/year").unwrap(), 0.1, 1e-12));
        assert!(close(c("12%/y").unwrap(), 0.01, 1e-12));
        // 730 hours in a month.
        assert!(close(c("1%/hour").unwrap(), 7.3, 1e-12));
        assert!(close(c("5%/week").unwrap(), 0.05 * 730.0 / 168.0, 1e-12));
        assert!(close(c("1%/day").unwrap(), 0.01 * 730.0 / 24.0, 1e-12));
        for bad in ["120/year", "1.5/month", "0%/month", "-5%/month", "abc", "10%/fortnight", "", "nan%/month"] {
            let e = c(bad).unwrap_err();
            assert!(e.to_string().contains("accepted"), "{bad}: {e}");
        }
    }

    #[test]
    fn params_are_checked() {
        let c: Churn = "10%/month".parse().unwrap();
        assert_eq!(Params::new(0, 2, 100, c, 3600.0), Err(ParamsError::ZeroK));
        assert_eq!(Params::new(200, 57, 1000, c, 3600.0), Err(ParamsError::TooManyShards(257)));
        assert_eq!(Params::new(4, 2, 5, c, 3600.0), Err(ParamsError::TooFewNodes { nodes: 5, shards: 6 }));
        assert_eq!(Params::new(4, 2, 6, c, 0.0), Err(ParamsError::RepairTime));
        assert_eq!(Params::new(4, 2, 6, c, 2.0 * YEAR_SECS), Err(ParamsError::RepairTime));
        assert!(Params::new(4, 2, 6, c, 3600.0).is_ok());
    }

    #[test]
    fn binomial_tail_by_hand() {
        let tail = |n, m, p: f64| ln_binomial_tail(n, m, p.ln(), (1.0 - p).ln()).exp();
        // n=2, p=1/2: P(X>0) = 3/4, P(X>1) = 1/4.
        assert!(close(tail(2, 0, 0.5), 0.75, 1e-12));
        assert!(close(tail(2, 1, 0.5), 0.25, 1e-12));
        // n=6, p=0.1, X>2: 1 − (0.9^6 + 6·0.1·0.9^5 + 15·0.01·0.9^4) = 0.01585.
        assert!(close(tail(6, 2, 0.1), 1.0 - (0.531441 + 0.354294 + 0.098415), 1e-9));
        // Tiny: n=6, p=1e-6, X>2 ≈ C(6,3)·1e-18 = 2e-17 (the next term is 1e-6 smaller).
        assert!(close(tail(6, 2, 1e-6), 2e-17, 1e-5));
        assert_eq!(tail(6, 6, 0.5), 0.0);
    }

    #[test]
    fn loss_rate_by_hand() {
        // 1+1 (mirroring), λ = 0.1/month, T = 730 h / 100 (λT = 1e-3):
        // q = 1e-3/1.001, r = λ · 1 · C(2,1) · q · (1 − q) = 2λq/(1.001).
        let p = params(1, 1, "10%/month", MONTH_SECS / 100.0);
        let lt = 1e-3;
        let q = lt / (1.0 + lt);
        let r_month = 0.1 * 2.0 * q * (1.0 - q);
        let e = estimate(&p);
        assert!(close(e.loss_events_per_month, r_month, 1e-12), "{} vs {r_month}", e.loss_events_per_month);
        assert!(close(e.per_month.p, 1.0 - (-r_month).exp(), 1e-12));
        assert!(close(e.per_year.p, 1.0 - (-12.0 * r_month).exp(), 1e-12));
        // 4+2, 10%/month, 1 h: λT = 0.1/730; r·T = λT · 4 · 15 · q² · (1 − q)⁴.
        let p = params(4, 2, "10%/month", 3600.0);
        let lt: f64 = 0.1 / 730.0;
        let q = lt / (1.0 + lt);
        let per_window = lt * 4.0 * 15.0 * q * q * (1.0 - q).powi(4);
        let e = estimate(&p);
        assert!(close(e.per_window.p, per_window, 1e-9), "{:?} vs {per_window}", e.per_window);
        assert!(close(e.per_year.p, 8760.0 * per_window, 1e-5));
        assert!(!e.meets_eleven_nines());
    }

    #[test]
    fn tiny_probabilities_stay_accurate() {
        // 10+20 at 10%/month, 1 h: r·T = λT · 10 · C(30,20) · q^20 · (1 − q)^10,
        // about 1e-73; computed here term by term in log10.
        let p = params(10, 20, "10%/month", 3600.0);
        let lt: f64 = 0.1 / 730.0;
        let q = lt / (1.0 + lt);
        let c30_20 = 30_045_015f64;
        let log10_year = (8760.0 * lt * 10.0 * c30_20).log10() + 20.0 * q.log10() + 10.0 * (1.0 - q).log10();
        let e = estimate(&p);
        assert!((e.per_year.log10 - log10_year).abs() < 1e-9, "{} vs {log10_year}", e.per_year.log10);
        assert!(e.per_year.log10 < -60.0 && e.per_year.p > 0.0);
        assert!(e.meets_eleven_nines());
        // 29+51 at 1%/month: safer still, and its log10 stays finite.
        let wide = params(29, 51, "1%/month", 3600.0);
        let w = estimate(&wide);
        assert!(w.per_year.log10.is_finite() && w.per_year.log10 < e.per_year.log10);
        // A 1e-20 probability: 1 − (1 − x) would give 0 or garbage.
        let x = Prob::from_ln_expected(1e-20f64.ln());
        assert!(close(x.p, 1e-20, 1e-12) && (x.log10 + 20.0).abs() < 1e-12);
        assert_eq!(x.to_string(), "1.00e-20");
    }

    #[test]
    fn fixed_windows_undercount_by_about_m_plus_one() {
        for (k, m) in [(4u16, 2u16), (10, 20), (1, 1), (8, 4)] {
            let e = estimate(&params(k, m, "10%/month", 3600.0));
            let ratio = 10f64.powf(e.per_year.log10 - e.fixed_window_per_year.log10);
            assert!(close(ratio, m as f64 + 1.0, 0.01), "{k}+{m}: ratio {ratio}");
        }
    }

    #[test]
    fn more_parity_or_faster_repair_is_safer() {
        let base = estimate(&params(4, 2, "10%/month", 3600.0)).per_year.log10;
        assert!(estimate(&params(4, 3, "10%/month", 3600.0)).per_year.log10 < base);
        assert!(estimate(&params(4, 2, "10%/month", 600.0)).per_year.log10 < base);
        assert!(estimate(&params(4, 2, "20%/month", 3600.0)).per_year.log10 > base);
        let p = params(4, 2, "10%/month", 3600.0);
        let m = min_m_for(&p, ELEVEN_NINES).unwrap();
        assert!(m > 2);
        assert!(estimate(&Params { m, ..p }).meets_eleven_nines());
        assert!(!estimate(&Params { m: m - 1, ..p }).meets_eleven_nines());
        let t = max_repair_secs_for(&p, ELEVEN_NINES).unwrap();
        assert!(t < 3600.0);
        assert!(estimate(&p.with_repair_secs(t * 0.99)).meets_eleven_nines());
        assert!(!estimate(&p.with_repair_secs(t * 1.01)).meets_eleven_nines());
    }

    /// The simulation runs the process, not the formula; at parameters where
    /// losses are frequent enough to count, the two must agree within 10%.
    #[test]
    fn monte_carlo_matches_the_rate() {
        for (k, m, repair) in [(4u16, 2u16, 3600.0), (1, 1, 3600.0), (2, 3, 6.0 * 3600.0), (10, 20, 3600.0)] {
            let p = params(k, m, "10%/month", repair);
            let c = check_churn(&p, 1.0).unwrap();
            let p = p.with_churn(c);
            let model = estimate(&p).loss_events_per_month;
            assert!(close(model, 1.0, 1e-6));
            let s = simulate(&p, MONTH_SECS, 3000, 7);
            let sim = s.loss_events_per_month();
            assert!(s.loss_events_per_month_std_err() / sim < 0.04, "{k}+{m}: too noisy: {s:?}");
            assert!(close(sim, model, 0.10), "{k}+{m} at {c}: model {model}, simulated {sim} ({s:?})");
        }
    }

    /// Where a loss is rare within one repair time (nλT small) yet the
    /// monthly probability is measurable, the simulated fraction of chunks
    /// lost within a month matches the printed probability.
    #[test]
    fn monte_carlo_matches_the_monthly_probability() {
        // 4+2, 1 h repair, churn with λT = 0.01: P(month) ≈ 0.04.
        let p = params(4, 2, "730%/month", 3600.0);
        let e = estimate(&p);
        assert!(e.per_month.p > 0.01 && e.per_month.p < 0.2, "{:?}", e.per_month);
        let s = simulate(&p, MONTH_SECS, 60_000, 11);
        assert!(close(s.lost_fraction(), e.per_month.p, 0.10), "model {:?}, simulated {s:?}", e.per_month);
    }

    /// A wrong formula must be caught: off by the fixed-window factor (m+1),
    /// or with m+1 in place of m, the simulation disagrees.
    #[test]
    fn monte_carlo_catches_a_wrong_model() {
        let p = params(4, 2, "10%/month", 3600.0);
        let p = p.with_churn(check_churn(&p, 1.0).unwrap());
        let s = simulate(&p, MONTH_SECS, 3000, 3);
        let fixed = fixed_window_loss(&p, MONTH_SECS);
        let fixed_events = -(-fixed.p).ln_1p();
        assert!(!close(s.loss_events_per_month(), fixed_events, 0.10));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

            /// Any code and repair time: at the churn where the model predicts
            /// one loss event per chunk-month, the simulation counts it within 10%.
            #[test]
            fn monte_carlo_agrees(k in 1u16..12, m in 0u16..6, repair_h in 0.1f64..48.0, seed in any::<u64>()) {
                let p = Params::new(k, m, 1000, "10%/month".parse().unwrap(), repair_h * 3600.0).unwrap();
                let c = check_churn(&p, 1.0).unwrap();
                let p = p.with_churn(c);
                let model = estimate(&p).loss_events_per_month;
                let s = simulate(&p, MONTH_SECS, 4000, seed);
                let sim = s.loss_events_per_month();
                // 10%, and at least 4 standard errors so a fair run never fails by chance.
                let tol = (0.10f64).max(4.0 * s.loss_events_per_month_std_err() / model);
                prop_assert!(tol < 0.2, "too noisy: {s:?}");
                prop_assert!(close(sim, model, tol), "{k}+{m} T={repair_h}h at {c}: model {model}, sim {sim}");
            }
        }
    }
}
