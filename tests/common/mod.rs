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
