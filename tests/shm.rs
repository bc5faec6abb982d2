//! `SharedMemory` and `ShareableList` across real processes.
//!
//! Several behaviours are ported from CPython's `Lib/test/_test_multiprocessing.py`
//! (`_TestSharedMemory`: test_shared_memory_basics, test_shared_memory_across_processes,
//! test_shared_memory_ShareableList_basics), rewritten for this crate.

mod support;

use std::os::fd::AsFd;

use support::{our_shm_entries, plant_segment, unique_name};
use tokio_multiprocessing::{self as mp, Error, Item, ShareableList, SharedMemory, Slot};

/// Attaches by name, checks what the parent wrote, writes an answer.
async fn attach_and_answer(name: String) -> Vec<u8> {
    let shm = SharedMemory::open(&name).expect("attach by name");
    let mut seen = vec![0u8; 5];
    shm.read_at(0, &mut seen).unwrap();
    shm.write_at(5, b"howdy").unwrap();
    seen
}

#[tokio::test]
async fn named_segment_is_shared_both_ways() -> mp::Result<()> {
    mp::init().await?;
    let name = unique_name("both-ways");
    let shm = SharedMemory::create_named(&name, 10)?;
    assert_eq!(shm.name(), Some(name.as_str()));
    assert_eq!(shm.size(), 10);
    shm.write_at(0, &[22, 33, 44, 55, 100])?;
    let seen = mp::Process::spawn(attach_and_answer, name.clone())?
        .join()
        .await?;
    assert_eq!(seen, [22, 33, 44, 55, 100]);
    let mut answer = [0u8; 5];
    shm.read_at(5, &mut answer)?;
    assert_eq!(&answer, b"howdy");
    drop(shm);
    assert!(
        our_shm_entries().iter().all(|e| e != &name),
        "owner drop must unlink"
    );
    assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound(_))));
    Ok(())
}

async fn write_through_handle(shm: SharedMemory) -> usize {
    shm.write_at(0, b"from the child").unwrap();
    shm.size()
}

#[tokio::test]
async fn anonymous_segment_travels_as_a_spawn_argument() -> mp::Result<()> {
    mp::init().await?;
    let shm = SharedMemory::create(4096)?;
    assert_eq!(shm.name(), None);
    let size = mp::Process::spawn(write_through_handle, shm.clone())?
        .join()
        .await?;
    assert_eq!(size, 4096);
    assert_eq!(&shm.to_vec()?[..14], b"from the child");
    Ok(())
}

/// Plays a hostile peer: tries to shrink and grow the segment under the parent.
async fn try_to_resize(shm: SharedMemory) -> (bool, bool) {
    let shrink = rustix::fs::ftruncate(mp::test_hooks::shared_memory_fd(&shm).as_fd(), 0).is_ok();
    let grow =
        rustix::fs::ftruncate(mp::test_hooks::shared_memory_fd(&shm).as_fd(), 1 << 20).is_ok();
    (shrink, grow)
}

#[tokio::test]
async fn a_peer_cannot_resize_a_sealed_segment() -> mp::Result<()> {
    mp::init().await?;
    let shm = SharedMemory::create(1 << 16)?;
    shm.write_at((1 << 16) - 4, b"tail")?;
    let (shrunk, grown) = mp::Process::spawn(try_to_resize, shm.clone())?
        .join()
        .await?;
    assert!(!shrunk && !grown, "sealed segment was resized");
    // The reader is unharmed: the last page is still mapped and intact (no SIGBUS).
    let mut tail = [0u8; 4];
    shm.read_at((1 << 16) - 4, &mut tail)?;
    assert_eq!(&tail, b"tail");
    Ok(())
}

#[test]
fn opening_a_missing_name_says_not_found() {
    let name = unique_name("missing");
    match SharedMemory::open(&name) {
        Err(Error::NotFound(n)) => assert_eq!(n, name),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn too_small_and_foreign_segments_are_refused() {
    let tiny = unique_name("tiny");
    plant_segment(&tiny, &[0u8; 16]);
    let foreign = unique_name("foreign");
    plant_segment(&foreign, &[0xabu8; 4096]);
    let tiny_result = SharedMemory::open(&tiny);
    let foreign_result = SharedMemory::open(&foreign);
    std::fs::remove_file(format!("/dev/shm/{tiny}")).unwrap();
    std::fs::remove_file(format!("/dev/shm/{foreign}")).unwrap();
    assert!(
        matches!(tiny_result, Err(Error::Corrupt(ref m)) if m.contains("smaller")),
        "{tiny_result:?}"
    );
    assert!(
        matches!(foreign_result, Err(Error::Corrupt(ref m)) if m.contains("magic")),
        "{foreign_result:?}"
    );
}

#[test]
fn a_segment_claiming_more_than_it_holds_is_refused() {
    // A genuine segment, then a copy of its header in a shorter file.
    let real = SharedMemory::create_named(&unique_name("real"), 4096).unwrap();
    let header = std::fs::read(format!("/dev/shm/{}", real.name().unwrap())).unwrap();
    let short = unique_name("short");
    plant_segment(&short, &header[..64 + 100]);
    let result = SharedMemory::open(&short);
    std::fs::remove_file(format!("/dev/shm/{short}")).unwrap();
    assert!(
        matches!(result, Err(Error::Corrupt(ref m)) if m.contains("claims")),
        "{result:?}"
    );
}

/// Regression: `ShareableList::open` of a crafted sparse 1 TiB file believed its slot count
/// and tried to allocate a 733 GB table. Every allocation sized from the file is now bounded.
#[test]
fn a_crafted_huge_sparse_list_is_refused_without_allocating() {
    // A genuine list's header, then a table claiming 2^36 slots, in a 1 TiB sparse file.
    let real = ShareableList::create_named(&unique_name("real-list"), [1i64]).unwrap();
    let mut bytes = std::fs::read(format!("/dev/shm/{}", real.name().unwrap())).unwrap();
    let size: u64 = 1 << 40;
    bytes[16..24].copy_from_slice(&(size - 64).to_le_bytes()); // the header's data size
    bytes[64 + 8..64 + 16].copy_from_slice(&(1u64 << 36).to_le_bytes()); // the slot count
    let name = unique_name("sparse-list");
    plant_segment(&name, &bytes[..64 + 16]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let result = ShareableList::open(&name);
    std::fs::remove_file(format!("/dev/shm/{name}")).unwrap();
    assert!(
        matches!(result, Err(Error::Corrupt(ref m)) if m.contains("slots")),
        "{result:?}"
    );
}

async fn truncate_segment_file(name: String) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Regression: a named segment or list whose file another process truncated killed us with
/// SIGBUS on the next `read_at`, `write_at`, atomic load, `to_vec` or `ShareableList::get`.
/// Now the vanished pages are replaced and every such call is an error.
#[tokio::test]
async fn a_named_segment_truncated_by_another_process_gives_errors_not_sigbus() -> mp::Result<()> {
    mp::init().await?;
    let name = unique_name("truncated");
    let shm = SharedMemory::create_named(&name, 1 << 20)?;
    shm.write_at(0, b"before")?;
    let other = SharedMemory::open(&name)?;
    let list_name = unique_name("truncated-list");
    let list = ShareableList::create_named(&list_name, [Item::Int(7), Item::from("text")])?;
    for victim in [name.clone(), list_name.clone()] {
        mp::Process::spawn(truncate_segment_file, victim)?
            .join()
            .await?;
    }
    let mut buf = [0u8; 6];
    let read = shm.read_at(0, &mut buf);
    // Used, as a caller's bytes are: a copy into a buffer nobody reads may be left out.
    std::hint::black_box(&buf);
    assert!(read.is_err());
    assert!(shm.write_at(0, b"after").is_err());
    assert!(shm.to_vec().is_err());
    // A word handed out before the truncation reads zeros instead of killing us; every
    // checked access after that fails.
    let word = other.atomic_u64(1 << 19)?;
    assert_eq!(word.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(other.atomic_u64(0).is_err());
    assert!(other.read_at(0, &mut buf).is_err());
    assert!(list.get(0).is_err());
    assert!(list.set(1, "new").is_err());
    assert!(list.to_vec().is_err());
    Ok(())
}

#[test]
fn a_segment_of_another_kind_is_refused() {
    let name = unique_name("kind");
    let _list = ShareableList::create_named(&name, [1i64, 2, 3]).unwrap();
    assert!(
        matches!(SharedMemory::open(&name), Err(Error::Corrupt(ref m)) if m.contains("ShareableList"))
    );
    let name2 = unique_name("kind2");
    let _raw = SharedMemory::create_named(&name2, 64).unwrap();
    assert!(matches!(
        ShareableList::open(&name2),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn a_segment_open_to_others_is_refused() {
    let name = unique_name("mode");
    let shm = SharedMemory::create_named(&name, 64).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        format!("/dev/shm/{name}"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let result = SharedMemory::open(&name);
    drop(shm);
    assert!(
        matches!(result, Err(Error::Io(ref e)) if e.kind() == std::io::ErrorKind::PermissionDenied)
    );
}

#[test]
fn names_are_exclusive_and_unlink_happens_once() {
    let name = unique_name("once");
    let shm = SharedMemory::create_named(&name, 32).unwrap();
    assert!(matches!(
        SharedMemory::create_named(&name, 32),
        Err(Error::AlreadyExists(_))
    ));
    shm.unlink().unwrap();
    assert!(matches!(shm.unlink(), Err(Error::NotFound(_))));
    // Another handle of another "process" (opened before the unlink) also gets an error.
    assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound(_))));
    // The mapping still works after unlink, as in Python.
    shm.write_at(0, b"still here").unwrap();
    assert_eq!(&shm.to_vec().unwrap()[..10], b"still here");
    // Nothing left to unlink on drop, and a new segment under the same name is not touched.
    let again = SharedMemory::create_named(&name, 32).unwrap();
    drop(shm);
    assert!(
        SharedMemory::open(&name).is_ok(),
        "dropping the old owner removed the new segment"
    );
    drop(again);
    assert!(our_shm_entries().iter().all(|e| e != &name));
}

#[test]
fn persist_keeps_the_name_after_drop() {
    let name = unique_name("persist");
    let shm = SharedMemory::create_named(&name, 32).unwrap();
    shm.persist();
    drop(shm);
    let reopened = SharedMemory::open(&name).unwrap();
    assert_eq!(reopened.size(), 32);
    reopened.unlink().unwrap();
}

#[test]
fn bad_sizes_names_and_ranges_are_errors() {
    assert!(matches!(
        SharedMemory::create(0),
        Err(Error::InvalidArgument(_))
    ));
    for bad in ["", "a/b", "..", &"x".repeat(201)] {
        assert!(
            matches!(
                SharedMemory::create_named(bad, 8),
                Err(Error::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    let shm = SharedMemory::create(8).unwrap();
    assert!(matches!(
        shm.write_at(5, b"four"),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        shm.read_at(usize::MAX, &mut [0; 2]),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(shm.unlink(), Err(Error::InvalidArgument(_))));
}

// ----- ShareableList -----

async fn edit_list(name: String) -> Vec<Item> {
    let list = ShareableList::open(&name).expect("attach list by name");
    let before = list.to_vec().unwrap();
    list.set(0, "ünïcødé ☃").unwrap();
    list.set(1, -7i64).unwrap();
    list.set(3, false).unwrap();
    list.set(4, b"\x00a\x00\x00".as_slice()).unwrap();
    before
}

#[tokio::test]
async fn shareable_list_is_shared_by_name() -> mp::Result<()> {
    mp::init().await?;
    let name = unique_name("list");
    let list = ShareableList::create_named(
        &name,
        [
            Item::from("howdy, how are you?"),
            Item::Int(42),
            Item::Float(-1.5),
            Item::Bool(true),
            Item::Bytes(b"xyz\x00\x00".to_vec()),
            Item::None,
        ],
    )?;
    let before = mp::Process::spawn(edit_list, name.clone())?.join().await?;
    assert_eq!(
        before,
        [
            Item::Str("howdy, how are you?".into()),
            Item::Int(42),
            Item::Float(-1.5),
            Item::Bool(true),
            Item::Bytes(b"xyz\x00\x00".to_vec()),
            Item::None,
        ]
    );
    assert_eq!(list.get(0)?, Item::Str("ünïcødé ☃".into()));
    assert_eq!(list.get(1)?, Item::Int(-7));
    assert_eq!(list.get(3)?, Item::Bool(false));
    // Trailing NULs are data, not padding.
    assert_eq!(list.get(4)?, Item::Bytes(b"\x00a\x00\x00".to_vec()));
    assert_eq!(list.count(&Item::None)?, 1);
    assert_eq!(list.index(&Item::Int(-7))?, Some(1));
    assert_eq!(list.index(&Item::Int(12345))?, None);
    Ok(())
}

#[test]
fn shareable_list_validates_every_write() {
    let list = ShareableList::create([Item::from("abc"), Item::Int(1)]).unwrap();
    // CPython gives "abc" an 8-byte slot; multi-byte characters count in bytes.
    assert_eq!(list.slot(0).unwrap(), Slot::Str { capacity: 8 });
    list.set(0, "12345678").unwrap();
    assert!(matches!(
        list.set(0, "123456789"),
        Err(Error::TooLarge { size: 9, max: 8 })
    ));
    assert!(matches!(
        list.set(0, "☃☃☃"),
        Err(Error::TooLarge { size: 9, max: 8 })
    ));
    assert_eq!(
        list.get(0).unwrap(),
        Item::Str("12345678".into()),
        "a refused write changes nothing"
    );
    assert!(matches!(
        list.set(2, 1i64),
        Err(Error::IndexOutOfRange { index: 2, len: 2 })
    ));
    assert!(matches!(list.get(2), Err(Error::IndexOutOfRange { .. })));
}

/// Python lets a slot take a value of another type when it fits (`sl[4] = "some"` where a
/// `None` was): a number's slot has 8 bytes of room, a text slot its capacity.
#[test]
fn shareable_list_slots_take_values_of_another_type_that_fit() {
    let list = ShareableList::create([Item::None, Item::Int(1), Item::from("abc")]).unwrap();
    list.set(0, "some").unwrap();
    assert_eq!(list.get(0).unwrap(), Item::Str("some".into()));
    assert_eq!(list.slot(0).unwrap(), Slot::Str { capacity: 8 });
    list.set(1, 2.5).unwrap();
    assert_eq!(list.get(1).unwrap(), Item::Float(2.5));
    list.set(2, 7i64).unwrap();
    assert_eq!(list.get(2).unwrap(), Item::Int(7));
    assert_eq!(list.slot(2).unwrap(), Slot::Int);
    list.set(2, b"12345678".as_slice()).unwrap();
    assert!(matches!(
        list.set(1, "too long to fit"),
        Err(Error::TooLarge { size: 15, max: 8 })
    ));
    assert_eq!(list.get(1).unwrap(), Item::Float(2.5), "nothing written");
    let narrow = ShareableList::with_slots(&[Slot::Bytes { capacity: 3 }]).unwrap();
    assert!(matches!(
        narrow.set(0, 1i64),
        Err(Error::TooLarge { size: 8, max: 3 })
    ));
}

/// `ShareableList([])` works in Python; so does an empty list here, across processes.
#[tokio::test]
async fn shareable_list_may_be_empty() -> mp::Result<()> {
    mp::init().await?;
    let list = ShareableList::create(Vec::<Item>::new())?;
    assert!(list.is_empty());
    assert_eq!(list.to_vec()?, Vec::<Item>::new());
    assert!(matches!(
        list.get(0),
        Err(Error::IndexOutOfRange { index: 0, len: 0 })
    ));
    let seen = mp::Process::spawn(list_len, list.clone())?.join().await?;
    assert_eq!(seen, 0);
    Ok(())
}

async fn list_len(list: ShareableList) -> usize {
    list.len()
}

async fn retype_slot(list: ShareableList) {
    list.set(0, "set by the child").unwrap();
    list.set(1, Item::None).unwrap();
}

#[tokio::test]
async fn shareable_list_type_changes_are_seen_by_other_processes() -> mp::Result<()> {
    mp::init().await?;
    let list = ShareableList::create([Item::from("x".repeat(20)), Item::Int(5)])?;
    mp::Process::spawn(retype_slot, list.clone())?
        .join()
        .await?;
    assert_eq!(list.get(0)?, Item::Str("set by the child".into()));
    assert_eq!(list.get(1)?, Item::None);
    Ok(())
}

#[test]
fn shareable_list_with_explicit_slots_starts_zeroed() {
    let list = ShareableList::with_slots(&[
        Slot::Str { capacity: 64 },
        Slot::Float,
        Slot::Bytes { capacity: 3 },
    ])
    .unwrap();
    assert_eq!(
        list.to_vec().unwrap(),
        [
            Item::Str(String::new()),
            Item::Float(0.0),
            Item::Bytes(Vec::new())
        ]
    );
    list.set(0, "a".repeat(64)).unwrap();
    assert_eq!(list.get(0).unwrap(), Item::Str("a".repeat(64)));
}

/// Fills half of a 2000-slot list, as in the example.
async fn fill_half((list, half): (ShareableList, usize)) {
    for i in half * 1000..(half + 1) * 1000 {
        list.set(i, i as i64).unwrap();
    }
}

#[tokio::test]
async fn two_children_fill_a_list_the_parent_sums() -> mp::Result<()> {
    mp::init().await?;
    let list = ShareableList::create(vec![0i64; 2000])?;
    let mut a = mp::Process::spawn(fill_half, (list.clone(), 0))?;
    let mut b = mp::Process::spawn(fill_half, (list.clone(), 1))?;
    a.join().await?;
    b.join().await?;
    let mut sum = 0;
    for item in list.to_vec()? {
        let Item::Int(v) = item else {
            panic!("not an int")
        };
        sum += v;
    }
    assert_eq!(sum, (0..2000).sum::<i64>());
    Ok(())
}

/// Readers in another process never see a half-written text value.
async fn read_many(list: ShareableList) -> usize {
    let mut reads = 0;
    for _ in 0..20_000 {
        match list.get(0).unwrap() {
            Item::Str(s) => {
                let first = s.chars().next().unwrap();
                assert!(s.chars().all(|c| c == first), "torn read: {s:?}");
                assert!(s.len() == 10 || s.len() == 40, "torn length: {}", s.len());
                reads += 1;
            }
            other => panic!("wrong item {other:?}"),
        }
    }
    reads
}

#[tokio::test]
async fn text_slots_are_never_torn() -> mp::Result<()> {
    mp::init().await?;
    let list = ShareableList::with_slots(&[Slot::Str { capacity: 40 }])?;
    list.set(0, "a".repeat(10))?;
    let mut reader = mp::Process::spawn(read_many, list.clone())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (list, stop) = (list.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let value = if n.is_multiple_of(2) {
                    "b".repeat(40)
                } else {
                    "c".repeat(10)
                };
                list.set(0, value).unwrap();
                n += 1;
            }
            n
        })
    };
    let reads = reader.join().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert_eq!(reads?, 20_000);
    eprintln!("{writes} writes raced 20000 reads");
    Ok(())
}

async fn count_up((shm, n): (SharedMemory, u64)) {
    let (small, big) = (shm.atomic_u32(0).unwrap(), shm.atomic_u64(8).unwrap());
    for _ in 0..n {
        small.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        big.fetch_add(3, std::sync::atomic::Ordering::AcqRel);
    }
}

#[tokio::test]
async fn atomics_in_a_segment_are_shared_by_processes() -> mp::Result<()> {
    use std::sync::atomic::Ordering;
    mp::init().await?;
    let shm = SharedMemory::create(16)?;
    let n = 50_000;
    let children = [
        mp::Process::spawn(count_up, (shm.clone(), n))?,
        mp::Process::spawn(count_up, (shm.clone(), n))?,
    ];
    count_up((shm.clone(), n)).await;
    for mut child in children {
        child.join().await?;
    }
    assert_eq!(shm.atomic_u32(0)?.load(Ordering::Acquire), 3 * n as u32);
    assert_eq!(shm.atomic_u64(8)?.load(Ordering::Acquire), 9 * n);
    assert!(matches!(shm.atomic_u64(4), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        shm.atomic_u64(16),
        Err(Error::IndexOutOfRange { .. })
    ));
    Ok(())
}
