//! Parsing a batch of log files: JSON lines into typed, exact columns, bad lines into quarantine
//! rows.
//!
//! Files are read one at a time (memory holds one file's bytes, not the batch's), split into
//! chunks at line boundaries and parsed on all cores (each line by [`super::line`]); the output
//! keeps the input order. Ids are interned: the records carry `meter` and `customer` as indexes
//! into the batch's lists of distinct ids, so a record is a few integers, not two strings. Every
//! line that cannot be used becomes a [`Quarantined`] row with its file, line number, raw text
//! and reason.

use std::path::PathBuf;

use polars::prelude::{Column, DataFrame};

use super::discover::PlannedFile;
use super::line::parse_line;
use crate::error::{Error, Result};
use crate::hashing::{Fast, FastMap};
use crate::hours::HOUR_MICROS;
use crate::quarantine::{Quarantined, Reason};
use crate::table::{col, long_column};

/// Column of the parsed records: ingestion order in the batch (file index << 32 | line).
pub const SEQ: &str = "seq";
/// Column of the parsed records: hour index of the record's ingestion-hour folder.
pub const INGEST_HOUR: &str = "ingest_hour";

/// The parsed batch.
#[derive(Debug)]
pub struct Parsed {
    /// Valid records: `meter`, `customer` (`Int64` indexes into `meters` and `customers`),
    /// `recorded_at` (µs since the epoch, UTC), `usage_hour` (hour index of `recorded_at`),
    /// `usage_ml`, [`INGEST_HOUR`] (hour index of the file's folder), [`SEQ`] (ingestion order
    /// in the batch: file index << 32 | line).
    pub records: DataFrame,
    /// The batch's distinct meter ids, in order of first appearance.
    pub meters: Vec<String>,
    /// The batch's distinct customer ids, in order of first appearance.
    pub customers: Vec<String>,
    /// Lines that could not be parsed.
    pub quarantined: Vec<Quarantined>,
    /// Lines read, valid or not.
    pub lines_read: u64,
}

/// Columns of valid records, filled by one chunk (ids as the chunk's own indexes).
#[derive(Default)]
struct Columns {
    meter: Vec<i64>,
    customer: Vec<i64>,
    recorded_at: Vec<i64>,
    usage_hour: Vec<i64>,
    usage_ml: Vec<i64>,
    ingest_hour: Vec<i64>,
    seq: Vec<i64>,
}

type IdMap<K> = FastMap<K, i64>;

/// An id as a hash-map key: ids up to 15 bytes (all usual meter and customer ids) packed in
/// two words with their length, so lookups compare integers, not strings; longer ids boxed.
/// (Two `u64`, not a `u128`: 8-byte alignment keeps a map entry at 32 bytes, not 48, so more of
/// the map stays in cache.)
#[derive(Clone, PartialEq, Eq, Hash)]
enum IdKey {
    Short([u64; 2]),
    Long(Box<str>),
}

impl IdKey {
    fn new(id: &str) -> Self {
        let b = id.as_bytes();
        if b.len() < 16 {
            let mut word = [0u8; 16];
            word[..b.len()].copy_from_slice(b);
            word[15] = b.len() as u8;
            let word = u128::from_le_bytes(word);
            IdKey::Short([word as u64, (word >> 64) as u64])
        } else {
            IdKey::Long(id.into())
        }
    }

    fn to_text(&self) -> String {
        match self {
            IdKey::Short([low, high]) => {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&low.to_le_bytes());
                bytes[8..].copy_from_slice(&high.to_le_bytes());
                let len = usize::from(bytes[15]);
                // The bytes came from a &str and are cut where it ended.
                String::from_utf8_lossy(&bytes[..len]).into_owned()
            }
            IdKey::Long(text) => text.to_string(),
        }
    }
}

/// Distinct ids in order of first appearance.
struct Interner {
    index: IdMap<IdKey>,
    ids: Vec<IdKey>,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            index: IdMap::with_capacity_and_hasher(1 << 16, Fast::default()),
            ids: Vec::new(),
        }
    }
}

impl Interner {
    fn intern_key(&mut self, key: &IdKey) -> i64 {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.ids.len() as i64;
        self.index.insert(key.clone(), i);
        self.ids.push(key.clone());
        i
    }
}

/// The ids one parser thread interned, over every file of the batch.
#[derive(Default)]
struct ThreadIds {
    meters: Interner,
    customers: Interner,
    /// Per meter index, the customer its last record named (key and index): a meter serves
    /// one customer almost always, so most records need one lookup, not two.
    customer_of_meter: Vec<(IdKey, i64)>,
}

/// Records whose ids are interned together: a map of every meter does not fit in the
/// processor's cache, and looking up a block of ids in one short loop lets the processor wait
/// for several of them at once, where one lookup between two lines' parsing waits alone.
const INTERN_BLOCK: usize = 64;

impl ThreadIds {
    /// Interns the `pending` records' `(meter, customer)` ids, in order, onto `cols`' id
    /// columns, and empties `pending`.
    fn intern_all(&mut self, pending: &mut Vec<(IdKey, IdKey)>, cols: &mut Columns) {
        for (meter, customer) in pending.drain(..) {
            let (m, c) = self.intern(&meter, customer);
            cols.meter.push(m);
            cols.customer.push(c);
        }
    }

    /// The thread's indexes of a record's meter and customer.
    fn intern(&mut self, meter: &IdKey, key: IdKey) -> (i64, i64) {
        let m = self.meters.intern_key(meter);
        if let Some((_, c)) = self
            .customer_of_meter
            .get(m as usize)
            .filter(|(cached, _)| *cached == key)
        {
            return (m, *c);
        }
        let c = self.customers.intern_key(&key);
        match self.customer_of_meter.get_mut(m as usize) {
            Some(slot) => *slot = (key, c),
            None => self.customer_of_meter.push((key, c)),
        }
        (m, c)
    }
}

/// What one thread's share of a file produced, its ids as that thread's indexes.
struct GroupOutput {
    thread: usize,
    columns: Columns,
    quarantined: Vec<Quarantined>,
    lines_read: u64,
}

/// A contiguous run of whole lines of one file.
struct Chunk<'a> {
    file: usize,
    ingest_hour: i64,
    first_line: u64,
    bytes: &'a [u8],
    behind_watermark: bool,
}

/// Reads and parses the batch's files. Files in folders older than `watermark_hour` are
/// quarantined whole.
pub fn parse_files(files: &[PlannedFile], watermark_hour: Option<i64>) -> Result<Parsed> {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut ids: Vec<ThreadIds> = (0..threads).map(|_| ThreadIds::default()).collect();
    let mut outputs: Vec<GroupOutput> = Vec::new();
    let mut bytes = Vec::new();
    for (file, f) in files.iter().enumerate() {
        read_planned(f, &mut bytes)?;
        let behind_watermark = watermark_hour.is_some_and(|w| f.ingest_hour < w);
        let target = (bytes.len() / (threads * 4)).max(1 << 20);
        let mut chunks = Vec::new();
        split_lines(&bytes, target, |first_line, bytes| {
            chunks.push(Chunk {
                file,
                ingest_hour: f.ingest_hour,
                first_line,
                bytes,
                behind_watermark,
            });
        });
        let per_thread = chunks.len().div_ceil(threads).max(1);
        let done: Vec<GroupOutput> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .chunks(per_thread)
                .zip(ids.iter_mut())
                .enumerate()
                .map(|(thread, (group, ids))| s.spawn(move || parse_group(group, thread, ids)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join())
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|_| Error::Panicked {
            what: "a parser thread".to_owned(),
        })?;
        outputs.extend(done);
    }
    let t = crate::trace::phase("parse/lines", started);
    // Each thread's ids to the batch's, numbered in the order the records came (so the
    // numbering does not depend on how the batch was split among threads).
    let mut meters = Interner::default();
    let mut customers = Interner::default();
    let mut meter_of: Vec<Vec<i64>> = ids.iter().map(|t| vec![-1; t.meters.ids.len()]).collect();
    let mut customer_of: Vec<Vec<i64>> = ids
        .iter()
        .map(|t| vec![-1; t.customers.ids.len()])
        .collect();
    let mut all = Columns::with_capacity(outputs.iter().map(|o| o.columns.seq.len()).sum());
    let mut quarantined = Vec::new();
    let mut lines_read = 0;
    for out in outputs {
        let t = out.thread;
        let thread_ids = &ids[t];
        let mut cols = out.columns;
        for m in &mut cols.meter {
            let slot = &mut meter_of[t][*m as usize];
            if *slot < 0 {
                *slot = meters.intern_key(&thread_ids.meters.ids[*m as usize]);
            }
            *m = *slot;
        }
        for c in &mut cols.customer {
            let slot = &mut customer_of[t][*c as usize];
            if *slot < 0 {
                *slot = customers.intern_key(&thread_ids.customers.ids[*c as usize]);
            }
            *c = *slot;
        }
        all.append(cols);
        quarantined.extend(out.quarantined);
        lines_read += out.lines_read;
    }
    let records = all.into_frame()?;
    crate::trace::phase("parse/ids", t);
    Ok(Parsed {
        records,
        meters: meters.ids.iter().map(IdKey::to_text).collect(),
        customers: customers.ids.iter().map(IdKey::to_text).collect(),
        quarantined,
        lines_read,
    })
}

/// The bytes of a planned file into `bytes`; a file whose size changed since it was planned is
/// an error.
fn read_planned(f: &PlannedFile, bytes: &mut Vec<u8>) -> Result<()> {
    f.read_into(bytes)?;
    if bytes.len() as u64 != f.size {
        return Err(Error::InputChanged {
            path: PathBuf::from(&f.path),
            when: "planned",
            before: f.size,
            now: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Calls `emit(first_line_number, bytes)` for chunks of about `target` bytes of whole lines.
fn split_lines<'a>(bytes: &'a [u8], target: usize, mut emit: impl FnMut(u64, &'a [u8])) {
    let (mut start, mut line) = (0usize, 1u64);
    while start < bytes.len() {
        let mut end = (start + target).min(bytes.len());
        while end < bytes.len() && bytes[end - 1] != b'\n' {
            end += 1;
        }
        let chunk = &bytes[start..end];
        emit(line, chunk);
        line += memchr::memchr_iter(b'\n', chunk).count() as u64;
        start = end;
    }
}

fn parse_group(chunks: &[Chunk<'_>], thread: usize, ids: &mut ThreadIds) -> GroupOutput {
    let mut cols = Columns::default();
    let mut quarantined = Vec::new();
    let mut lines_read = 0;
    let mut pending = Vec::with_capacity(INTERN_BLOCK);
    for chunk in chunks {
        let text = chunk.bytes.strip_suffix(b"\n").unwrap_or(chunk.bytes);
        let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
        let mut from = 0;
        for (i, end) in ends.enumerate() {
            let raw = &text[from..end];
            from = end + 1;
            lines_read += 1;
            let line = chunk.first_line + i as u64;
            let outcome = if chunk.behind_watermark {
                Err((
                    Reason::FileBehindWatermark,
                    "the file's ingestion hour is older than the watermark".to_owned(),
                ))
            } else {
                parse_line(raw)
            };
            match outcome {
                Ok(r) => {
                    cols.usage_hour.push(r.recorded_at.div_euclid(HOUR_MICROS));
                    pending.push((IdKey::new(&r.meter_id), IdKey::new(&r.customer_id)));
                    if pending.len() == INTERN_BLOCK {
                        ids.intern_all(&mut pending, &mut cols);
                    }
                    cols.recorded_at.push(r.recorded_at);
                    cols.usage_ml.push(r.usage_ml);
                    cols.ingest_hour.push(chunk.ingest_hour);
                    cols.seq.push(((chunk.file as i64) << 32) | line as i64);
                }
                Err((reason, detail)) => quarantined.push(Quarantined {
                    file: chunk.file,
                    line,
                    reason,
                    detail,
                    raw: String::from_utf8_lossy(raw).into_owned(),
                }),
            }
        }
    }
    ids.intern_all(&mut pending, &mut cols);
    GroupOutput {
        thread,
        columns: cols,
        quarantined,
        lines_read,
    }
}

impl Columns {
    fn with_capacity(len: usize) -> Self {
        Self {
            meter: Vec::with_capacity(len),
            customer: Vec::with_capacity(len),
            recorded_at: Vec::with_capacity(len),
            usage_hour: Vec::with_capacity(len),
            usage_ml: Vec::with_capacity(len),
            ingest_hour: Vec::with_capacity(len),
            seq: Vec::with_capacity(len),
        }
    }

    fn append(&mut self, other: Columns) {
        self.meter.extend(other.meter);
        self.customer.extend(other.customer);
        self.recorded_at.extend(other.recorded_at);
        self.usage_hour.extend(other.usage_hour);
        self.usage_ml.extend(other.usage_ml);
        self.ingest_hour.extend(other.ingest_hour);
        self.seq.extend(other.seq);
    }

    fn into_frame(self) -> Result<DataFrame> {
        let height = self.seq.len();
        let columns: Vec<Column> = vec![
            long_column(col::METER, self.meter),
            long_column(col::CUSTOMER, self.customer),
            long_column(col::RECORDED_AT, self.recorded_at),
            long_column(col::USAGE_HOUR, self.usage_hour),
            long_column(col::USAGE_ML, self.usage_ml),
            long_column(INGEST_HOUR, self.ingest_hour),
            long_column(SEQ, self.seq),
        ];
        DataFrame::new(height, columns).map_err(Error::polars("building the parsed batch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_line_once() {
        let text = b"a\nbb\nccc\n\ndddd\ne";
        for target in 1..20 {
            let mut seen = Vec::new();
            split_lines(text, target, |first, bytes| {
                let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                for (i, l) in body.split(|&b| b == b'\n').enumerate() {
                    seen.push((first + i as u64, l.to_vec()));
                }
            });
            let expected: Vec<(u64, Vec<u8>)> = [&b"a"[..], b"bb", b"ccc", b"", b"dddd", b"e"]
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.to_vec()))
                .collect();
            assert_eq!(seen, expected, "target {target}");
        }
    }

    #[test]
    fn ids_are_interned_across_files_and_chunks() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("parse");
        let dir = temp_dir.path().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let line = |m: &str, c: &str| {
            format!(
                r#"{{"meter_id":"{m}","customer_id":"{c}","recorded_at":"2026-03-01T05:10:00Z","usage_liters":1,"ingested_at":"x"}}"#
            )
        };
        let mut files = Vec::new();
        for (i, body) in [
            format!("{}\n{}\nbad\n", line("M2", "C1"), line("M1", "C1")),
            format!("{}\n{}\n", line("M1", "C1"), line("M3", "C2")),
        ]
        .iter()
        .enumerate()
        {
            let path = dir.join(format!("{i}.jsonl"));
            std::fs::write(&path, body).map_err(|e| Error::io("writing", &path, e))?;
            files.push(PlannedFile {
                rel_path: format!("{i}.jsonl"),
                path,
                size: body.len() as u64,
                ingest_hour: 0,
            });
        }
        let parsed = parse_files(&files, None)?;
        assert_eq!(parsed.meters, ["M2", "M1", "M3"]);
        assert_eq!(parsed.customers, ["C1", "C2"]);
        let ids = |name: &str| -> Result<Vec<i64>> {
            Ok(crate::table::long_values(&parsed.records, name, "test")?.into_owned())
        };
        assert_eq!(ids(col::METER)?, [0, 1, 1, 2]);
        assert_eq!(ids(col::CUSTOMER)?, [0, 0, 0, 1]);
        assert_eq!(ids(SEQ)?, [1, 2, 1 << 32 | 1, 1 << 32 | 2]);
        assert_eq!((parsed.lines_read, parsed.quarantined.len()), (5, 1));
        Ok(())
    }

    #[test]
    fn ids_are_numbered_in_order_across_interning_blocks() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("parse-blocks");
        let path = temp_dir.path().join("0.jsonl");
        std::fs::create_dir_all(temp_dir.path())
            .map_err(|e| Error::io("creating", temp_dir.path(), e))?;
        // 300 lines (several blocks): meter i % 70 for customer (i % 70) / 2, except that
        // meters from line 150 on read for customer 100 + (i % 70) / 2 (a meter's customer
        // changing in the middle of the file, and in the middle of a block).
        let customer = |i: usize| {
            if i < 150 {
                i % 70 / 2
            } else {
                100 + i % 70 / 2
            }
        };
        let body: String = (0..300)
            .map(|i| {
                format!(
                    r#"{{"meter_id":"M{}","customer_id":"C{}","recorded_at":"2026-03-01T05:10:00Z","usage_liters":1,"ingested_at":"x"}}
"#,
                    i % 70,
                    customer(i)
                )
            })
            .collect();
        std::fs::write(&path, &body).map_err(|e| Error::io("writing", &path, e))?;
        let files = [PlannedFile {
            rel_path: "0.jsonl".to_owned(),
            path,
            size: body.len() as u64,
            ingest_hour: 0,
        }];
        let parsed = parse_files(&files, None)?;
        let meters: Vec<String> = (0..70).map(|m| format!("M{m}")).collect();
        assert_eq!(parsed.meters, meters);
        // Customers in order of first appearance: C0..C34; from line 150 (meter 10) C105..C134,
        // then from line 210 (meter 0) C100..C104.
        let mut customers: Vec<String> = (0..35).map(|c| format!("C{c}")).collect();
        customers.extend((105..135).chain(100..105).map(|c| format!("C{c}")));
        assert_eq!(parsed.customers, customers);
        let column = |name: &str| -> Result<Vec<i64>> {
            Ok(crate::table::long_values(&parsed.records, name, "test")?.into_owned())
        };
        let expected_meters: Vec<i64> = (0..300).map(|i| (i % 70) as i64).collect();
        let expected_customers: Vec<i64> = (0..300)
            .map(|i| match (i, i % 70 / 2) {
                (..150, k) => k,
                (_, k @ 5..) => 35 + k - 5,
                (_, k) => 65 + k,
            } as i64)
            .collect();
        assert_eq!(column(col::METER)?, expected_meters);
        assert_eq!(column(col::CUSTOMER)?, expected_customers);
        Ok(())
    }
}
