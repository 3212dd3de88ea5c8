//! The gate that makes growing the map sound.
//!
//! LMDB may only change the size of its memory map while no transaction of this process is
//! active: remapping moves the pages that open transactions (and the event views borrowed from
//! them) point into. Every transaction VarveDB opens, read or write, therefore holds a
//! [`GateGuard`]; growing the map takes the gate exclusively, waiting for the guards to drop.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics::handles::StoreMetrics;

/// Counts active transactions so that the map is resized only when there are none. Also holds
/// the store's metric handles, which every transaction reaches through its guard.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    pub(crate) metrics: StoreMetrics,
}

#[derive(Default)]
struct GateState {
    active: usize,
    exclusive: bool,
}

/// Held by every transaction for its whole life.
pub(crate) struct GateGuard(pub(crate) Arc<Gate>);

/// Held while the map is resized.
pub(crate) struct ExclusiveGuard<'a>(&'a Gate);

impl Gate {
    /// A gate with no transaction active, holding the store's metric handles.
    pub(crate) fn new(metrics: StoreMetrics) -> Gate {
        Gate {
            metrics,
            ..Gate::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn enter(self: &Arc<Self>) -> GateGuard {
        let mut state = self.lock();
        while state.exclusive {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.active += 1;
        GateGuard(Arc::clone(self))
    }

    pub(crate) fn exclusive(&self, timeout: Duration) -> Option<ExclusiveGuard<'_>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.exclusive {
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.exclusive = true;
        while state.active > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                state.exclusive = false;
                self.changed.notify_all();
                return None;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(ExclusiveGuard(self))
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.active -= 1;
        if state.active == 0 && state.exclusive {
            self.0.changed.notify_all();
        }
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().exclusive = false;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_waits_for_guards_and_times_out() {
        let gate = Arc::new(Gate::default());
        let g = gate.enter();
        assert!(gate.exclusive(Duration::from_millis(20)).is_none());
        // A failed attempt leaves the gate usable.
        let g2 = gate.enter();
        drop(g);
        drop(g2);
        let ex = gate.exclusive(Duration::from_millis(20));
        assert!(ex.is_some());
        drop(ex);
        let _g3 = gate.enter();
    }

    #[test]
    fn exclusive_granted_once_guard_moves_and_drops_on_other_thread() {
        let gate = Arc::new(Gate::default());
        let g = gate.enter();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(g);
        });
        assert!(gate.exclusive(Duration::from_secs(5)).is_some());
        t.join().unwrap();
    }
}
