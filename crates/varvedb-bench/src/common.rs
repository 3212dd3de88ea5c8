//! What the three engines share: the event, the deterministic write plans, timing helpers.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::report::Latency;

/// Errors of the harness: any engine's error, reported and fatal.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The benchmark event. Archived, it is [`payload_len`] bytes (about 100).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone)]
pub struct BenchEvent {
    /// An account number.
    pub account: u64,
    /// The field every typed read touches.
    pub amount: i64,
    /// Free text that makes up most of the payload.
    pub note: String,
}

/// 72 bytes of text: with the 24-byte archived struct, a 96-byte payload.
const NOTE: &str = "transfer between accounts, reference 0123456789, memo: monthly rent ok.";

impl BenchEvent {
    /// The `n`th event of a workload.
    pub fn new(n: u64) -> Self {
        BenchEvent {
            account: n,
            amount: (n as i64).wrapping_mul(3) - 7,
            note: NOTE.to_owned(),
        }
    }
}

/// Length of an archived [`BenchEvent`].
pub fn payload_len() -> usize {
    rkyv::to_bytes::<rkyv::rancor::Error>(&BenchEvent::new(1))
        .map(|b| b.len())
        .unwrap_or(0)
}

/// Length of a VarveDB record holding one [`BenchEvent`], per `docs/format.md`: an 88-byte header
/// plus the event type name padded to 16, then the payload padded to 16. The raw heed and SQLite
/// workloads store values of exactly this length, so every engine moves the same bytes.
pub fn record_len() -> usize {
    let align16 = |n: usize| n.div_ceil(16) * 16;
    let type_name = <BenchEvent as varvedb::Event>::NAME;
    align16(88 + type_name.len()) + align16(payload_len())
}

/// A small deterministic xorshift64* generator: every engine sees the same streams and keys.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How the events of one write transaction are spread over streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Every event of a transaction goes to one stream, chosen at random per transaction.
    OneStream,
    /// Every event goes to its own random stream.
    StreamPerEvent,
}

/// A write workload: the stream of every event, cut into transactions of `per_txn` events.
/// Streams are numbered `1..=streams`.
#[derive(Clone, Debug)]
pub struct Plan {
    streams: Vec<u64>,
    per_txn: usize,
}

impl Plan {
    /// A plan of `events` events (rounded down to whole transactions).
    pub fn new(events: u64, per_txn: usize, spread: Spread, streams: u64, seed: u64) -> Plan {
        let mut rng = Rng::new(seed);
        let txns = (events as usize / per_txn).max(1);
        let mut out = Vec::with_capacity(txns * per_txn);
        for _ in 0..txns {
            let stream = 1 + rng.below(streams);
            for _ in 0..per_txn {
                out.push(match spread {
                    Spread::OneStream => stream,
                    Spread::StreamPerEvent => 1 + rng.below(streams),
                });
            }
        }
        Plan {
            streams: out,
            per_txn,
        }
    }

    /// The streams of each transaction's events, in order.
    pub fn txns(&self) -> std::slice::Chunks<'_, u64> {
        self.streams.chunks(self.per_txn)
    }

    /// Number of events.
    pub fn events(&self) -> u64 {
        self.streams.len() as u64
    }

    /// Largest stream number used, for sizing per-stream version tables.
    pub fn max_stream(&self) -> usize {
        self.streams.iter().copied().max().unwrap_or(0) as usize
    }

    /// The plan's first `txns` transactions.
    pub fn prefix(&self, txns: usize) -> Plan {
        let end = (txns * self.per_txn).min(self.streams.len());
        Plan {
            streams: self.streams[..end].to_vec(),
            per_txn: self.per_txn,
        }
    }

    /// Every stream that holds events once the plan has run, with its number of events.
    pub fn stream_lengths(&self) -> Vec<(u64, u64)> {
        let mut lens = vec![0u64; self.max_stream() + 1];
        for &s in &self.streams {
            lens[s as usize] += 1;
        }
        lens.iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(s, &n)| (s as u64, n))
            .collect()
    }
}

/// Random existing streams whose lengths add up to at least `target` events (each stream read
/// whole), and that total.
pub fn pick_streams(lengths: &[(u64, u64)], target: u64, seed: u64) -> (Vec<u64>, u64) {
    let mut rng = Rng::new(seed);
    let mut picked = Vec::new();
    let mut total = 0;
    while total < target && !lengths.is_empty() {
        let (stream, len) = lengths[rng.below(lengths.len() as u64) as usize];
        picked.push(stream);
        total += len;
    }
    (picked, total)
}

/// `count` random sequences in `1..=head`.
pub fn random_seqs(count: u64, head: u64, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| 1 + rng.below(head)).collect()
}

/// Key of a stream in every engine: the big-endian u128, as VarveDB stores it.
pub fn stream_key(stream: u64) -> [u8; 16] {
    u128::from(stream).to_be_bytes()
}

/// Read transactions are renewed after this many point gets (or events read), in every engine.
pub const RENEW_EVERY: u64 = 10_000;

/// Events done in a measured time.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Events written or read.
    pub events: u64,
    /// Wall time they took.
    pub elapsed: Duration,
}

impl Rate {
    /// Events per second.
    pub fn per_sec(self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Times `f`, which returns the number of events it handled.
pub fn timed(f: impl FnOnce() -> Res<u64>) -> Res<Rate> {
    let start = Instant::now();
    let events = f()?;
    Ok(Rate {
        events,
        elapsed: start.elapsed(),
    })
}

/// An engine's way of running one write transaction of a [`Plan`], durably.
pub trait Appender {
    /// Writes one event to each stream of `streams` (in order) in one durable transaction.
    fn append_txn(&mut self, streams: &[u64]) -> Res<()>;
}

/// Runs `plan` on every engine, interleaved transaction by transaction (A B C, A B C, ...) so that
/// disk and CPU noise falls on all of them alike, each engine timed over its own transactions
/// only. Stops starting new transactions once `budget` of wall time has passed, so that a slow
/// disk shortens the run instead of lengthening it. Returns each engine's rate and the part of the
/// plan that ran (the same for every engine).
pub fn append_interleaved(
    plan: &Plan,
    budget: Duration,
    engines: &mut [&mut dyn Appender],
) -> Res<(Vec<Rate>, Plan)> {
    let started = Instant::now();
    let mut spent = vec![Duration::ZERO; engines.len()];
    let mut txns = 0;
    for txn in plan.txns() {
        if started.elapsed() > budget {
            break;
        }
        for (engine, spent) in engines.iter_mut().zip(&mut spent) {
            let t = Instant::now();
            engine.append_txn(txn)?;
            *spent += t.elapsed();
        }
        txns += 1;
    }
    let done = plan.prefix(txns);
    let rates = spent
        .into_iter()
        .map(|elapsed| Rate {
            events: done.events(),
            elapsed,
        })
        .collect();
    Ok((rates, done))
}

/// What one contender did over the repetitions of a read workload.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Median events/s.
    pub median: f64,
    /// Events handled by the last repetition (the same every time).
    pub events: u64,
}

/// Runs every contender `reps` times, interleaved (A B C, A B C, ...) so that the noise of a
/// shared machine falls on all of them alike, and returns each one's median.
pub fn interleaved(
    reps: usize,
    contenders: &mut [&mut dyn FnMut() -> Res<Rate>],
) -> Res<Vec<Measured>> {
    let mut rates = vec![Vec::with_capacity(reps); contenders.len()];
    let mut events = vec![0; contenders.len()];
    for _ in 0..reps.max(1) {
        for (i, run) in contenders.iter_mut().enumerate() {
            let rate = run()?;
            rates[i].push(rate.per_sec());
            events[i] = rate.events;
        }
    }
    Ok(rates
        .iter_mut()
        .zip(events)
        .map(|(r, events)| Measured {
            median: median(r),
            events,
        })
        .collect())
}

/// Median of a non-empty list.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Which streams the writers of a concurrent run append to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contention {
    /// Writer `i` appends to stream `i + 1` only: no conflicts possible.
    OwnStream,
    /// Every writer appends to stream 1: each reads the version, appends at version + 1 and
    /// retries on a conflict.
    OneStream,
}

impl Contention {
    /// The stream writer `writer` appends to.
    pub fn stream(self, writer: usize) -> u64 {
        match self {
            Contention::OwnStream => writer as u64 + 1,
            Contention::OneStream => 1,
        }
    }
}

/// What one writer (thread or task) of a concurrent run did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Successful appends.
    pub appends: u64,
    /// Conflicts retried through on the way.
    pub conflicts: u64,
    /// Nanoseconds from the first attempt of each successful append to its success.
    pub latencies: Vec<u64>,
}

impl Tally {
    /// Records one successful append begun at `started` that retried through `conflicts`.
    pub fn record(&mut self, started: Instant, conflicts: u64) {
        self.appends += 1;
        self.conflicts += conflicts;
        self.latencies.push(started.elapsed().as_nanos() as u64);
    }
}

/// What all writers of one engine did over the timed runs of one concurrent row.
#[derive(Debug, Default)]
pub struct Burst {
    /// Successful appends.
    pub appends: u64,
    /// Conflicts the writers retried through.
    pub conflicts: u64,
    /// Wall time from the start signal until the last writer finished its last append.
    pub elapsed: Duration,
    /// Per-append latencies in nanoseconds, unsorted.
    pub latencies: Vec<u64>,
    /// VarveDB only: write transactions committed (`Stats::commits`) during the runs.
    pub commits: u64,
    /// VarveDB only: batches those transactions carried (`Stats::committed_batches`).
    pub batches: u64,
}

impl Burst {
    /// The writers' tallies of one run that took `elapsed`.
    pub fn new(tallies: Vec<Tally>, elapsed: Duration) -> Burst {
        let mut burst = Burst {
            elapsed,
            ..Burst::default()
        };
        for t in tallies {
            burst.appends += t.appends;
            burst.conflicts += t.conflicts;
            burst.latencies.extend(t.latencies);
        }
        burst
    }

    /// Adds another run of the same engine and row.
    pub fn merge(&mut self, other: Burst) {
        self.appends += other.appends;
        self.conflicts += other.conflicts;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.commits += other.commits;
        self.batches += other.batches;
    }

    /// Successful appends per second of wall time.
    pub fn per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// p50, p99 and maximum of the per-append latencies.
    pub fn latency(&mut self) -> Option<Latency> {
        percentiles(&mut self.latencies)
    }

    /// VarveDB's average commit group: batches per committed transaction.
    pub fn group_size(&self) -> Option<f64> {
        (self.commits > 0).then(|| self.batches as f64 / self.commits as f64)
    }
}

/// p50, p99 and maximum of latencies in nanoseconds (sorted in place); `None` when empty.
pub fn percentiles(ns: &mut [u64]) -> Option<Latency> {
    ns.sort_unstable();
    let n = ns.len();
    let at = |q: f64| Duration::from_nanos(ns[((n - 1) as f64 * q).round() as usize]);
    (n > 0).then(|| Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    })
}

/// Runs every writer on its own thread for `duration` of wall time, all starting together.
/// Each call of a writer is one successful append (retries included) and returns the conflicts
/// it retried through; a writer starts no append after its deadline. The first error of any
/// writer fails the run.
pub fn run_threads<F>(writers: Vec<F>, duration: Duration) -> Res<Burst>
where
    F: FnMut() -> Res<u64> + Send,
{
    let start = Barrier::new(writers.len() + 1);
    let (tallies, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .into_iter()
            .map(|mut append| {
                let start = &start;
                scope.spawn(move || -> Result<Tally, String> {
                    start.wait();
                    let deadline = Instant::now() + duration;
                    let mut tally = Tally::default();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let conflicts = append().map_err(|e| e.to_string())?;
                        tally.record(t, conflicts);
                    }
                    Ok(tally)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let tallies: Vec<Result<Tally, String>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("writer thread panicked".into()))
            })
            .collect();
        (tallies, started.elapsed())
    });
    let tallies = tallies.into_iter().collect::<Result<Vec<_>, String>>()?;
    Ok(Burst::new(tallies, elapsed))
}

/// Runs `writers` writers on their own threads for `duration` (see [`run_threads`]); `make`
/// builds each one, before the start, from the stream it appends to under `contention`.
pub fn run_writers<F>(
    writers: usize,
    contention: Contention,
    duration: Duration,
    make: impl FnMut(u64) -> Res<F>,
) -> Res<Burst>
where
    F: FnMut() -> Res<u64> + Send,
{
    let jobs = (0..writers)
        .map(|i| contention.stream(i))
        .map(make)
        .collect::<Res<Vec<F>>>()?;
    run_threads(jobs, duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_shaped() {
        let a = Plan::new(100, 10, Spread::OneStream, 50, 7);
        let b = Plan::new(100, 10, Spread::OneStream, 50, 7);
        assert_eq!(a.streams, b.streams);
        for txn in a.txns() {
            assert!(txn.iter().all(|&s| s == txn[0]));
        }
        let lens: u64 = a.stream_lengths().iter().map(|(_, n)| n).sum();
        assert_eq!(lens, 100);
    }

    #[test]
    fn bursts_merge_and_give_percentiles() {
        let tally = |ms: std::ops::RangeInclusive<u64>| Tally {
            appends: ms.clone().count() as u64,
            conflicts: 1,
            latencies: ms.map(|m| m * 1_000_000).collect(),
        };
        let mut burst = Burst::new(vec![tally(1..=50)], Duration::from_secs(1));
        burst.merge(Burst::new(vec![tally(51..=100)], Duration::from_secs(1)));
        assert_eq!(burst.appends, 100);
        assert_eq!(burst.conflicts, 2);
        assert_eq!(burst.per_sec(), 50.0);
        let l = burst.latency().expect("latencies");
        assert_eq!(l.p50, Duration::from_millis(51));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
        assert_eq!(Burst::default().latency().map(|l| l.p50), None);
    }

    #[test]
    fn threads_run_until_the_deadline() {
        let counter = std::sync::atomic::AtomicU64::new(0);
        let writers = (0..4)
            .map(|_| {
                || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                    Ok(0)
                }
            })
            .collect();
        let burst = run_threads(writers, Duration::from_millis(50)).expect("run");
        assert_eq!(burst.appends, counter.into_inner());
        assert!(burst.appends >= 4 && burst.elapsed >= Duration::from_millis(50));
    }

    #[test]
    fn the_payload_is_about_100_bytes() {
        assert!((90..=110).contains(&payload_len()));
        assert_eq!(record_len() % 16, 0);
    }
}
