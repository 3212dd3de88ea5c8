//! What reads must yield according to the model, compared exactly with what the store yields.

use std::collections::BTreeSet;

use varvedb::error::Result;
use varvedb::EventView;
use varvedb::{Envelope, StreamId};

use super::coverage;
use super::errors::{to_merr, MErr};
use super::model::{Ev, Rec};

/// The model as a read sees it: a log (the whole one, or the prefix a snapshot saw), the
/// shredded streams (as they are now: a shred destroys the key for old snapshots too), and
/// whether the store is encrypted.
#[derive(Clone, Copy)]
pub struct Expect<'a> {
    pub log: &'a [Rec],
    pub shredded: &'a BTreeSet<u128>,
    pub encrypted: bool,
}

impl Expect<'_> {
    /// The outcome of reading the event at `seq` (which is in the log): its record, or
    /// `Shredded` when its stream is shredded.
    pub fn event(&self, seq: u64) -> std::result::Result<&Rec, MErr> {
        let rec = &self.log[seq as usize - 1];
        if self.shredded.contains(&rec.stream) {
            return Err(MErr::Shredded {
                stream: StreamId(rec.stream),
                seq,
            });
        }
        Ok(rec)
    }

    /// Compares the outcome of a read of the event at `seq` with the model. Returns the commit
    /// timestamp of an event read.
    pub fn view(&self, got: Result<EventView<'_, Ev>>, seq: u64) -> Option<u64> {
        match (got, self.event(seq)) {
            (Ok(view), Ok(rec)) => {
                assert_eq!(view.seq(), seq, "seq of the view");
                assert_eq!(view.version(), rec.version);
                assert_eq!(view.n.to_native(), rec.ev.n);
                assert_eq!(view.s.as_str(), rec.ev.s);
                assert_eq!(view.deserialize().expect("deserialize"), rec.ev);
                let env = view.envelope();
                self.envelope(&env, seq);
                Some(env.timestamp_ns)
            }
            (Err(e), Err(want)) => {
                assert_eq!(to_merr(e), want, "read of seq {seq}");
                coverage::hit("shredded_read");
                None
            }
            (Ok(_), Err(want)) => panic!("seq {seq} read, wanted {want:?}"),
            (Err(e), Ok(_)) => panic!("seq {seq} failed to read: {e:?}"),
        }
    }

    /// Compares an envelope (readable also for a shredded event) with the model's record at
    /// `seq`.
    pub fn envelope(&self, env: &Envelope<'_>, seq: u64) {
        let rec = &self.log[seq as usize - 1];
        assert_eq!(env.seq, seq);
        assert_eq!(env.stream, StreamId(rec.stream), "stream at seq {seq}");
        assert_eq!(env.version, rec.version, "version at seq {seq}");
        assert_eq!(env.event_id, rec.id, "event id at seq {seq}");
        let prev = self.log[..seq as usize - 1]
            .iter()
            .rposition(|r| r.stream == rec.stream)
            .map(|i| i as u64 + 1);
        assert_eq!(env.prev_seq, prev, "prev_seq at seq {seq}");
        assert_eq!(
            env.event_type,
            super::model::type_of(rec.ev.n),
            "type at seq {seq}"
        );
        assert_eq!(env.schema_version, 1);
        assert_eq!(env.metadata, None);
        assert_eq!(env.correlation_id, None);
        assert_eq!(env.causation_id, None);
        assert_eq!(env.encrypted, self.encrypted, "encrypted flag at seq {seq}");
    }

    /// Compares the items of a read with the outcomes of the events at `want`, in order; the
    /// read goes on past shredded events.
    pub fn list<'t>(
        &self,
        got: impl Iterator<Item = Result<EventView<'t, Ev>>>,
        want: &[u64],
        what: &str,
    ) {
        let mut n = 0;
        // The seq and commit timestamp of the last event read: timestamps grow along the log.
        let mut last: Option<(u64, u64)> = None;
        for (i, item) in got.enumerate() {
            let seq = *want.get(i).unwrap_or_else(|| {
                panic!("{what}: more items than expected {want:?}, extra item {item:?}")
            });
            if let Some(ts) = self.view(item, seq) {
                if let Some((s, t)) = last {
                    assert!(
                        seq < s || ts >= t,
                        "{what}: timestamps go back at seq {seq}"
                    );
                }
                last = Some((seq, ts));
            }
            n += 1;
        }
        assert_eq!(n, want.len(), "{what}: count (wanted {want:?})");
    }

    /// What a `for_each_*` scan over the events at `want` must do: the sequences it calls its
    /// function with, and its result. It stops at the first event that fails to read (a shredded
    /// one), or after `stop_after` events when that is not 0.
    pub fn scan(
        &self,
        want: &[u64],
        stop_after: usize,
    ) -> (Vec<u64>, std::result::Result<u64, MErr>) {
        let mut seen = Vec::new();
        for &seq in want {
            if let Err(e) = self.event(seq) {
                return (seen, Err(e));
            }
            seen.push(seq);
            if seen.len() == stop_after {
                break;
            }
        }
        let n = seen.len() as u64;
        (seen, Ok(n))
    }
}
