//! What wakes a processor or projector: a new committed head, or a stop request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::store::Storage;

/// Stops a running [`Processor`](crate::Processor) or [`Projector`](crate::Projector) from another
/// task or thread.
#[derive(Clone, Debug)]
pub struct StopHandle {
    wake: watch::Sender<bool>,
    flag: Arc<AtomicBool>,
}

/// What wakes a processor: a new committed head, or a stop request.
pub(crate) struct Wake {
    head: watch::Receiver<u64>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    /// The same stop request, cheap to check per event.
    stop_flag: Arc<AtomicBool>,
}

impl Wake {
    pub(crate) fn new(head: watch::Receiver<u64>) -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        Wake {
            head,
            stop_tx,
            stop_rx,
            stop_flag: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn stop_handle(&self) -> StopHandle {
        StopHandle {
            wake: self.stop_tx.clone(),
            flag: Arc::clone(&self.stop_flag),
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop_flag.load(Ordering::Acquire)
    }

    /// The committed head, marking the bus as seen.
    pub(crate) fn head(&mut self, storage: &Storage) -> u64 {
        // One borrow at a time: a watch's borrow holds its read lock, and a second borrow of
        // the same lock while a commit waits to publish would wait for that commit forever.
        let announced = *self.head.borrow_and_update();
        announced.max(storage.head())
    }

    /// The stop request, for the batch running on the blocking pool.
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop_flag)
    }
}

/// Waits for a new head or a stop request. `false` when the store's writer side is gone.
pub(crate) async fn wait_for_work(wake: &mut Wake) -> bool {
    tokio::select! {
        changed = wake.head.changed() => changed.is_ok(),
        _ = wake.stop_rx.changed() => true,
    }
}

impl StopHandle {
    /// Asks the processor to stop: `run` returns after the event in hand and after committing
    /// the checkpoint of everything handled.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.send_replace(true);
    }
}
