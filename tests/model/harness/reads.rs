//! The reads, each compared with what the model says it must yield; and the full comparison.

use std::ops::ControlFlow;

use varvedb::{Direction, Filter, StreamId, StreamInfo};

use super::expect::Expect;
use varvedb::EventView;
use varvedb::ReadTxn;

use super::coverage;
use super::errors::to_merr;
use super::model::{filtered_seqs, log_seqs, stream_seqs, streams_in, version_in, Ev, Rec};
use super::ops::{Cat, Dir, Pick, Stream, Ty, CATEGORIES, MAX_STOP_AFTER, STREAMS, TYPES};
use super::Harness;

/// A position to read from: one of 0..=limit+1, or `u64::MAX` for `None`.
fn resolve_from(from: Option<Pick>, limit: u64) -> u64 {
    match from {
        Some(i) => i.index(limit as usize + 2) as u64,
        None => u64::MAX,
    }
}

impl Harness {
    fn expect(&self) -> Expect<'_> {
        self.expect_of(&self.model.log)
    }

    fn expect_of<'a>(&'a self, log: &'a [Rec]) -> Expect<'a> {
        Expect {
            log,
            shredded: &self.model.shredded,
            encrypted: self.encrypted,
        }
    }

    /// What `streams()` lists in `txn`.
    fn listed(&self, txn: &ReadTxn) -> Vec<StreamInfo> {
        self.reader()
            .streams(txn)
            .expect("streams")
            .collect::<Result<_, _>>()
            .expect("stream info")
    }

    /// A sequence around the log: 0, every event's, and two past the end.
    fn pick_seq(&self, seq: Pick) -> u64 {
        seq.index(self.model.log.len() + 3) as u64
    }

    fn in_log(&self, seq: u64) -> bool {
        seq >= 1 && seq <= self.model.log.len() as u64
    }

    pub(super) fn get(&self, seq: Pick) {
        let seq = self.pick_seq(seq);
        let txn = self.storage().env.read_txn().unwrap();
        match self.reader().get(&txn, seq).transpose() {
            None => assert!(!self.in_log(seq), "get({seq}) found nothing"),
            Some(got) => {
                assert!(self.in_log(seq), "get({seq}) beyond the log found an event");
                self.expect().view(got, seq);
            }
        }
    }

    pub(super) fn envelope(&self, seq: Pick) {
        let seq = self.pick_seq(seq);
        let txn = self.storage().env.read_txn().unwrap();
        // The envelope is read without the payload: a shredded event has one too.
        match self.reader().envelope(&txn, seq).expect("envelope") {
            None => assert!(!self.in_log(seq), "envelope({seq}) found nothing"),
            Some(env) => {
                assert!(self.in_log(seq), "envelope({seq}) beyond the log");
                self.expect().envelope(&env, seq);
            }
        }
    }

    pub(super) fn read_stream(&self, stream: Stream, from: Option<Pick>, dir: Dir) {
        let stream = stream.id();
        let from = resolve_from(from, self.model.current(stream));
        let dir = Direction::from(dir);
        let want = stream_seqs(&self.model.log, stream, from, dir);
        let txn = self.storage().env.read_txn().unwrap();
        let got = self
            .reader()
            .read_stream(&txn, StreamId(stream), from, dir)
            .expect("read_stream");
        let what = format!("read_stream({stream}, {from}, {dir:?})");
        self.expect().list(got, &want, &what);
    }

    pub(super) fn read_log(&self, from: Option<Pick>, dir: Dir) {
        let from = resolve_from(from, self.model.log.len() as u64);
        let dir = Direction::from(dir);
        let want = log_seqs(&self.model.log, from, dir);
        let txn = self.storage().env.read_txn().unwrap();
        let got = self.reader().read_log(&txn, from, dir).expect("read_log");
        self.expect()
            .list(got, &want, &format!("read_log({from}, {dir:?})"));
    }

    pub(super) fn read_filtered(
        &self,
        category: Option<Cat>,
        event_type: Option<Ty>,
        from: Option<Pick>,
        dir: Dir,
    ) {
        let (category, event_type) = (category.map(Cat::name), event_type.map(Ty::name));
        let from = resolve_from(from, self.model.log.len() as u64);
        let dir = Direction::from(dir);
        let want = filtered_seqs(&self.model.log, category, event_type, from, dir);
        let mut filter = Filter::default();
        if let Some(category) = category {
            filter = filter.category(category);
        }
        if let Some(event_type) = event_type {
            filter = filter.event_type(event_type);
        }
        let txn = self.storage().env.read_txn().unwrap();
        let got = self
            .reader()
            .read_filtered(&txn, &filter, from, dir)
            .expect("read_filtered");
        let what = format!("read_filtered({category:?}, {event_type:?}, {from}, {dir:?})");
        self.expect().list(got, &want, &what);
        coverage::hit(if want.is_empty() {
            "filtered_empty"
        } else {
            "filtered"
        });
    }

    pub(super) fn for_each_in_log(&self, from: Option<Pick>, dir: Dir, stop_after: u8) {
        let from = resolve_from(from, self.model.log.len() as u64);
        let dir = Direction::from(dir);
        let want = log_seqs(&self.model.log, from, dir);
        self.check_scan(
            &want,
            stop_after,
            &format!("for_each_in_log({from}, {dir:?})"),
            |f| self.reader().for_each_in_log(from, dir, f),
        );
    }

    pub(super) fn for_each_in_stream(
        &mut self,
        stream: Stream,
        from: Option<Pick>,
        dir: Dir,
        stop_after: u8,
    ) {
        let stream = stream.id();
        let from = resolve_from(from, self.model.current(stream));
        let dir = Direction::from(dir);
        let want = stream_seqs(&self.model.log, stream, from, dir);
        let what = format!("for_each_in_stream({stream}, {from}, {dir:?})");
        self.check_scan(&want, stop_after, &what, |f| {
            self.reader()
                .for_each_in_stream(StreamId(stream), from, dir, f)
        });
    }

    /// Runs a `for_each_*` scan over the events at `want` with a function that checks each view
    /// and breaks after `stop_after` of them (never for 0), and compares what it saw and its
    /// result with the model.
    fn check_scan(
        &self,
        want: &[u64],
        stop_after: u8,
        what: &str,
        scan: impl FnOnce(
            &mut dyn FnMut(EventView<'_, Ev>) -> ControlFlow<()>,
        ) -> varvedb::error::Result<u64>,
    ) {
        let stop_after = usize::from(stop_after % (MAX_STOP_AFTER + 1));
        let expect = self.expect();
        let (want_seen, want_result) = expect.scan(want, stop_after);
        let mut seen = Vec::new();
        let got = scan(&mut |view| {
            let seq = view.seq();
            seen.push(seq);
            expect.view(Ok(view), seq);
            if seen.len() == stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(to_merr);
        assert_eq!(seen, want_seen, "{what}: events visited");
        assert_eq!(got, want_result, "{what}: result");
        if got.is_err() {
            coverage::hit("shredded_scan");
        }
    }

    pub(super) fn last_in_stream(&self, stream: Stream) {
        let stream = stream.id();
        let last = stream_seqs(&self.model.log, stream, u64::MAX, Direction::Backward);
        let txn = self.storage().env.read_txn().unwrap();
        let got = self.reader().last_in_stream(&txn, StreamId(stream));
        match (got.transpose(), last.first()) {
            (None, None) => {}
            (Some(got), Some(&seq)) => {
                self.expect().view(got, seq);
            }
            (got, want) => panic!("last_in_stream({stream}): {got:?}, wanted seq {want:?}"),
        }
    }

    pub(super) fn stream_version(&self, stream: Stream) {
        let stream = stream.id();
        let want = self.model.current(stream);
        let txn = self.storage().env.read_txn().unwrap();
        let got = self.reader().stream_version(&txn, StreamId(stream));
        assert_eq!(got.unwrap(), want, "Reader::stream_version({stream})");
        drop(txn);
        let got = self.storage().stream_version(StreamId(stream));
        assert_eq!(got.unwrap(), want, "Storage::stream_version({stream})");
    }

    pub(super) fn streams(&self) {
        let txn = self.storage().env.read_txn().unwrap();
        assert_eq!(self.listed(&txn), streams_in(&self.model.log), "streams()");
    }

    pub(super) fn snapshot(&mut self) {
        let txn = self.storage().env.read_txn().unwrap();
        self.snapshot = Some((txn, self.model.log.len()));
    }

    pub(super) fn check_snapshot(&self) {
        let Some((txn, len)) = &self.snapshot else {
            return;
        };
        let log = &self.model.log[..*len];
        let expect = self.expect_of(log);
        let reader = self.reader();
        let got = reader.read_log(txn, 1, Direction::Forward).unwrap();
        expect.list(
            got,
            &log_seqs(log, 1, Direction::Forward),
            "read_log on a snapshot",
        );
        assert_eq!(self.listed(txn), streams_in(log), "streams() on a snapshot");
        for s in *STREAMS {
            assert_eq!(
                reader.stream_version(txn, StreamId(s)).unwrap(),
                version_in(log, s),
                "stream_version({s}) on a snapshot"
            );
        }
        assert!(reader.get(txn, *len as u64 + 1).unwrap().is_none());
    }

    /// A full comparison of the store with the model.
    pub fn check_all(&self) {
        let log = &self.model.log;
        let expect = self.expect();
        let txn = self.storage().env.read_txn().unwrap();
        let reader = self.reader();
        let all = log_seqs(log, 1, Direction::Forward);
        let got = reader.read_log(&txn, 0, Direction::Forward).unwrap();
        expect.list(got, &all, "full log");
        for s in *STREAMS {
            let want = stream_seqs(log, s, 0, Direction::Forward);
            let got = reader
                .read_stream(&txn, StreamId(s), 0, Direction::Forward)
                .unwrap();
            expect.list(got, &want, "full stream");
        }
        assert_eq!(self.listed(&txn), streams_in(log), "streams()");
        for category in CATEGORIES.iter().map(Some).chain([None]) {
            for event_type in TYPES.iter().map(Some).chain([None]) {
                for dir in [Direction::Forward, Direction::Backward] {
                    let from = if dir == Direction::Forward {
                        0
                    } else {
                        u64::MAX
                    };
                    let want =
                        filtered_seqs(log, category.copied(), event_type.copied(), from, dir);
                    let mut filter = Filter::default();
                    if let Some(category) = category {
                        filter = filter.category(*category);
                    }
                    if let Some(event_type) = event_type {
                        filter = filter.event_type(*event_type);
                    }
                    let got = reader.read_filtered(&txn, &filter, from, dir).unwrap();
                    let what = format!("full read of {category:?} and {event_type:?} {dir:?}");
                    expect.list(got, &want, &what);
                }
            }
        }
    }
}
