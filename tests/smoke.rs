use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug)]
#[rkyv(derive(Debug))]
pub struct MyEvent {
    pub id: u32,
    pub data: String,
}

#[test]
fn seed_example() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })?;
    let mut writer = Writer::<MyEvent>::new(storage.clone());
    let reader = Reader::<MyEvent>::new(storage.clone());
    assert_eq!(
        writer.append(
            1,
            1,
            MyEvent {
                id: 1,
                data: "Hello".into()
            }
        )?,
        1
    );
    let txn = storage.env.read_txn()?;
    let event = reader.get(&txn, 1)?.expect("event 1");
    println!("{:?}", event);
    assert_eq!(event.id, 1);
    assert_eq!(event.data, "Hello");
    assert!(!event.is_copied());
    assert_eq!(
        format!("{event:?}"),
        "ArchivedMyEvent { id: 1, data: \"Hello\" }"
    );
    Ok(())
}
