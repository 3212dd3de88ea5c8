//! `varve streams PATH [--category C]...`

use std::io::Write;
use std::path::Path;

use serde_json::json;
use varvedb::admin::{self, StreamNames};

use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::store::{check_labels, open_existing};

pub fn run(
    path: &Path,
    limit: Option<u64>,
    categories: &[String],
    json: bool,
    out: &mut dyn Write,
) -> CliResult<u8> {
    check_labels(path, categories)?;
    let storage = open_existing(path)?;
    let err = |e| CliError::store(path, e);
    let txn = storage.env.read_txn().map_err(err)?;
    let mut names = StreamNames::new(&storage, &txn);
    if !json {
        writeln!(
            out,
            "{:<40} {:>12} {:>14} {:>14}  {:<16} name",
            "stream", "version", "first seq", "last seq", "category"
        )?;
    }
    let limit = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut listed = 0;
    for info in admin::streams(&storage, &txn).map_err(err)? {
        if listed == limit {
            break;
        }
        let info = info.map_err(err)?;
        let name = names.get(info.stream).map_err(err)?;
        let category = name.map(|n| n.category());
        if !categories.is_empty() && !category.is_some_and(|c| categories.iter().any(|x| x == c)) {
            continue;
        }
        listed += 1;
        if json {
            json_line(
                out,
                &json!({
                    "stream": info.stream.to_string(),
                    "name": name.map(|n| n.as_str()),
                    "category": category,
                    "version": info.version,
                    "first_seq": info.first_seq,
                    "last_seq": info.last_seq,
                }),
            )?;
        } else {
            writeln!(
                out,
                "{:<40} {:>12} {:>14} {:>14}  {:<16} {}",
                info.stream.to_string(),
                info.version,
                info.first_seq,
                info.last_seq,
                category.unwrap_or("-"),
                name.map_or("-", |n| n.as_str()),
            )?;
        }
    }
    Ok(0)
}
