//! Runs the model of the `model` test (`tests/model/`) on ops decoded from the fuzzer's bytes:
//! every op's result is compared with the in-memory model exactly, errors included, and the
//! whole store with the model at the end, before and after a reopen. Any difference panics.
//!
//! Input: the first byte chooses a plain (even) or an encrypted (odd) store; the rest decodes
//! with `arbitrary` into up to [`MAX_OPS`] ops (the op types derive `Arbitrary`).
#![no_main]

use std::cell::RefCell;
use std::sync::Once;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// The test's harness and model, included from `tests/model/harness/` as they are: one source
/// for the test and this target, so that they cannot drift apart. (A crate of their own would
/// have to be a path dependency of the library's dev-dependencies and of this crate, a third
/// package for a few test files; the include keeps them beside the test that explains them.)
/// Parts only the test uses, such as its report of the outcomes reached, are dead code here.
#[path = "../../tests/model/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

use harness::ops::Op;

/// Most ops of one input: longer inputs add little but time.
const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&flavour, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let ops: Vec<Op> = u
        .arbitrary_iter::<Op>()
        .expect("an iterator over the bytes")
        .take(MAX_OPS)
        .map_while(Result::ok)
        .collect();
    let encrypted = flavour & 1 == 1;
    report_ops_on_panic(&ops, encrypted);
    harness::run_case(&ops, encrypted, &parent());
});

thread_local! {
    /// The ops of the input being run, for the panic report.
    static RUNNING: RefCell<Option<(bool, Vec<Op>)>> = const { RefCell::new(None) };
}

/// Makes a failure print the decoded ops (the input's bytes alone say little), ready to be
/// written as a fixed sequence of the `model` test. libFuzzer's own panic hook, which aborts,
/// runs after it.
fn report_ops_on_panic(ops: &[Op], encrypted: bool) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let next = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            RUNNING.with(|r| {
                if let Some((encrypted, ops)) = &*r.borrow() {
                    let store = if *encrypted { "encrypted" } else { "plain" };
                    eprintln!("model run failed on a {store} store; the ops: {ops:#?}");
                }
            });
            next(info);
        }));
    });
    RUNNING.with(|r| *r.borrow_mut() = Some((encrypted, ops.to_vec())));
}

/// Where the stores go: tmpfs when there is one, where the store's fsync per commit costs
/// nothing and the fuzzer runs many more inputs; the system's temporary directory otherwise.
fn parent() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
