//! Model-based test of the public API: random sequences of appends, batches (with idempotent
//! retries, mutated retries and duplicate ids), multi-stream transactions, async writes, index
//! flushes, shredding, key rotations, reopens and reads are run against the store and against a
//! trivial in-memory model, and every result is compared exactly, errors included.
//!
//! The harness (`harness/`) is shared with the `model` fuzz target; this file holds the tests,
//! `strategy.rs` the proptest strategies, `fixed.rs` hand-written sequences.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 256 each on a plain and an encrypted
//! store); the check that every outcome was reached applies to the default number or more.

mod fixed;
mod harness;
mod strategy;

use proptest::test_runner::{Config, TestRunner};

use harness::coverage;
use harness::ops::Op;
use harness::run_case;

const MAX_OPS: usize = 40;

/// Runs one sequence on a new store.
fn run(ops: &[Op], encrypted: bool) {
    run_case(ops, encrypted, &std::env::temp_dir());
}

#[test]
fn model_matches_store() {
    model_run(256, false);
}

/// The same model against an encrypted store: encryption must change nothing a caller sees, but
/// for shredding and key rotation, which only an encrypted store does.
#[test]
fn model_matches_encrypted_store() {
    model_run(256, true);
}

/// Outcomes every run with the default number of cases reaches (each many times over).
const REACHED: &[&str] = &[
    "written",
    "deduplicated",
    "conflict",
    "id_conflict",
    "dup_in_batch",
    "invalid_version",
    "empty",
    "async_ok",
    "async_err",
    "tx_written",
    "tx_deduplicated",
    "tx_failed",
    "tx_empty",
    "tx_part_refused",
    "tx_async_ok",
    "flush",
    "reopen",
    "filtered",
    "filtered_empty",
];

/// Outcomes only a plain store reaches.
const REACHED_PLAIN: &[&str] = &["not_encrypted"];

/// Outcomes only an encrypted store reaches.
const REACHED_ENCRYPTED: &[&str] = &[
    "shred",
    "shred_again",
    "stream_shredded",
    "shredded_read",
    "shredded_scan",
    "rotate",
];

fn model_run(default_cases: u32, encrypted: bool) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = Config {
        cases,
        // Only tests/ files of this test may be created; shrunk failures are printed instead.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(
        &proptest::collection::vec(strategy::op(encrypted), 1..=MAX_OPS),
        |ops| {
            run(&ops, encrypted);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = coverage::seen();
    println!("outcomes reached: {seen:?}");
    if cases < default_cases {
        return;
    }
    let flavour = if encrypted {
        REACHED_ENCRYPTED
    } else {
        REACHED_PLAIN
    };
    for outcome in REACHED.iter().chain(flavour) {
        assert!(
            seen.contains_key(outcome),
            "no case reached outcome {outcome}: {seen:?}"
        );
    }
}
