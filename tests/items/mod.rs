//! The event type the upcasting and migration tests share: `ItemAdded` at versions 1 and 2
//! (frozen), renamed `LineAdded` at version 3 with its quantity widened.

use varvedb::Upcast;

/// Version 1, frozen.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[event(name = "ItemAdded", version = 1)]
pub struct ItemAddedV1 {
    pub sku: String,
    pub qty: u32,
}

/// Version 2, frozen: a note.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[event(name = "ItemAdded", version = 2, previous = ItemAddedV1)]
pub struct ItemAddedV2 {
    pub sku: String,
    pub qty: u32,
    pub note: Option<String>,
}

impl Upcast<ItemAddedV1> for ItemAddedV2 {
    fn upcast(old: ItemAddedV1) -> Self {
        ItemAddedV2 {
            sku: old.sku,
            qty: old.qty,
            note: None,
        }
    }
}

/// Version 3, current: renamed, the quantity widened.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, PartialEq, Clone,
)]
#[event(name = "LineAdded", version = 3, previous = ItemAddedV2)]
pub struct LineAdded {
    pub sku: String,
    pub quantity: u64,
    pub note: String,
}

impl Upcast<ItemAddedV2> for LineAdded {
    fn upcast(old: ItemAddedV2) -> Self {
        LineAdded {
            sku: old.sku,
            quantity: u64::from(old.qty),
            note: old.note.unwrap_or_else(|| "-".into()),
        }
    }
}
