//! Helpers shared by the integration tests (each test file includes this module with
//! `mod common;` and uses what it needs).
#![allow(dead_code)]

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: an implementation
/// independent of the library's, to recognise and re-seal records in raw files.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The lines a child process prints after `mark` on its stdout, sent one by one as they come (on
/// a thread that ends with the stream). The test harness of a child that is a test prints its own
/// words before the first line, on the same line: a line is taken from the mark on.
pub fn marked_lines(
    stdout: std::process::ChildStdout,
    mark: &'static str,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.find(mark).map(|at| &line[at + mark.len()..]) {
                if tx.send(rest.to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    (rx, reader)
}

/// A child process under watch: its marked stdout lines (see [`marked_lines`]) arrive on `rx` as
/// they come and are also collected; its stderr is collected. A line cut short by a kill (no
/// newline) is not taken: it is no acknowledgement.
pub struct Watched {
    pub child: std::process::Child,
    pub rx: std::sync::mpsc::Receiver<String>,
    out: std::thread::JoinHandle<Vec<String>>,
    err: std::thread::JoinHandle<String>,
}

impl Watched {
    /// Spawns `command` with piped stdout and stderr.
    pub fn spawn(command: &mut std::process::Command, mark: &'static str) -> Watched {
        use std::io::{BufRead, Read};
        use std::process::Stdio;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = std::io::BufReader::new(stdout);
            let mut buf = String::new();
            loop {
                buf.clear();
                match reader.read_line(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !buf.ends_with('\n') => break,
                    Ok(_) => {
                        if let Some(at) = buf.find(mark) {
                            let line = buf[at + mark.len()..].trim_end().to_string();
                            let _ = tx.send(line.clone());
                            lines.push(line);
                        }
                    }
                }
            }
            lines
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Watched {
            child,
            rx,
            out,
            err,
        }
    }

    /// Kills the child (if it still runs) and returns how it ended, its lines and its stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for child");
        (status, self.out.join().unwrap(), self.err.join().unwrap())
    }

    /// Cuts the power of `fs` under the child at its `ops`-th write or sync after the child's
    /// `acks`-th line that `is_ack` accepts (counted from the mount with `acks: 0`). Returns the
    /// cut's report, and why the test must fail when the child ended or stalled before the cut.
    pub fn cut_on_progress(
        &self,
        fs: &powercut::PowerCut,
        is_ack: impl Fn(&str) -> bool,
        acks: u64,
        ops: u64,
        keep: powercut::Keep,
    ) -> (powercut::CutReport, Option<String>) {
        use std::sync::mpsc::RecvTimeoutError;
        use std::time::{Duration, Instant};
        if acks == 0 {
            fs.arm(ops, keep);
        }
        let started = Instant::now();
        let mut seen = 0;
        let failure = loop {
            if fs.cut_report().is_some() {
                break None;
            }
            match self.rx.recv_timeout(Duration::from_millis(5)) {
                Ok(line) if is_ack(&line) => {
                    seen += 1;
                    if seen == acks {
                        let c = fs.counters();
                        fs.arm(c.writes + c.syncs + ops, keep);
                    }
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // It may have ended on the errors of a cut that just happened.
                    break fs
                        .cut_report()
                        .is_none()
                        .then(|| format!("ended before the cut ({seen} acknowledgements)"));
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                break Some(format!(
                    "made no progress to cut on ({seen} acknowledgements)"
                ));
            }
        };
        // Cut now if the armed cut has not happened (the test fails then anyway).
        let report = fs.cut_report().map_or_else(|| fs.cut(keep), Ok);
        (report.expect("cut the power"), failure)
    }
}

/// Starts a child process that is a test of its own binary: a panic on any thread ends the
/// process at once with status 101 (a panic would otherwise end only that thread, and the child
/// would go on until it is killed), and a newline ends what the test harness printed before the
/// child's first line.
pub fn start_child() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    println!();
}

/// The number in the environment variable `name`, or `default` when it is unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mounts the power-cut filesystem at `mountpoint` over `disk`.
pub fn mount_power_cut(disk: &std::path::Path, mountpoint: &std::path::Path) -> powercut::PowerCut {
    powercut::PowerCut::mount(disk, mountpoint)
        .expect("mount the power-cut filesystem (needs /dev/fuse and root)")
}

/// What the `iter`-th cut of a power-cut test keeps of the unsynced pages: the cuts go round
/// losing them all, keeping random whole pages, and tearing pages sector by sector.
pub fn keep_for(iter: u64, seed: u64) -> powercut::Keep {
    match iter % 3 {
        0 => powercut::Keep::Nothing,
        1 => powercut::Keep::Random(seed),
        _ => powercut::Keep::Sectors(seed),
    }
}
