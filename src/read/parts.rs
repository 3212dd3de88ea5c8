//! The events of a record that an upcast splits ([`Split`](crate::Split)): the read of the
//! record fails with [`Error::Split`], which carries the parts' archives, and the read path
//! turns it into the parts' views here, to hand them out one by one at the record's place.
//! Carried by the error, the parts cost the paths nothing for records that are not split: each
//! path tests for an error already. (`Events`, which hands out one event per call, hands them
//! out through `Events::next_part` instead.)

use super::readable::{Readable, Record};
use super::reader::Reader;
use crate::error::{Error, Result};
use crate::format::record::DecodedRecord;

/// The views of the parts of `rec` when its read failed with a split, in `backward`'s order
/// (the last first when `backward`); any other error as it is.
#[cold]
#[inline(never)]
pub(crate) fn of<'t, R: Readable>(
    reader: &Reader<R>,
    rec: DecodedRecord<'t>,
    e: Error,
    backward: bool,
) -> Result<Vec<R::View<'t>>> {
    let Error::Split(parts) = e else {
        return Err(e);
    };
    let mut views = R::split_views(reader.kinds(), Record(rec), parts)?;
    if backward {
        views.reverse();
    }
    Ok(views)
}
