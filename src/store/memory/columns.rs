//! The metadata of one full chunk of the in-memory copy ([`ROWS`] rows), turned into
//! columns a filter can be answered from without looking at each row: for every field path
//! the rows that have it, and its distinct scalar values in order, each with the rows that
//! hold it (as the value or as an element of an array). A filter becomes one 256-bit row
//! mask per chunk ([`Columns::matching`]), built from a few binary searches, so a selective
//! filter makes a search cheaper instead of dearer.
//!
//! It owns that representation and how a [`Filter`] is answered from it. It must mean
//! exactly what [`Filter::matches`] means row by row (the differential test in
//! [`crate::store::filter::eval`] checks the three: SQL, rows, columns). What the columns cannot
//! answer (`$contains` on a string, `$size`, `$elemMatch`, and texts longer than [`LONG_TEXT`], which are
//! not copied here) it hands to [`Filter::matches`] for just the rows still in question.
//! It never sees SQL, and a chunk's columns never change: a chunk is full, and immutable,
//! before they are built.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::store::filter::{Candidate, Cmp, Filter, Operand, Path};
use crate::store::metadata::Metadata;

/// Rows per chunk, and bits per mask.
pub const ROWS: usize = 256;
/// Texts up to this many bytes are copied into the columns; a row holding a longer one is
/// marked instead, and checked row by row when a text test could concern it.
pub const LONG_TEXT: usize = 64;

/// One bit per row of a chunk.
pub type Mask = [u64; ROWS / 64];

pub const NONE: Mask = [0; ROWS / 64];

/// The columns of one chunk, sorted by path (segments joined by `.`; an object key holding a
/// `.` is never indexed, as no filter path can name it).
#[derive(Debug, Clone, Default)]
pub struct Columns {
    paths: Vec<(Box<str>, Column)>,
}

#[derive(Debug, Clone, Default)]
struct Column {
    /// Rows where the path resolves (to any value, null included).
    present: Mask,
    /// Rows where the value at the path is null (not an element of an array).
    null: Mask,
    /// Rows holding a text longer than [`LONG_TEXT`] (as the value or an element).
    long: Mask,
    /// Distinct scalar values, sorted by [`Key::cmp`].
    keys: Vec<Key>,
    /// `rows[starts[i]..starts[i + 1]]` hold `keys[i]`.
    starts: Vec<u16>,
    rows: Vec<u8>,
}

/// A scalar as filters compare it: numbers as `f64` (`-0.0` as `0.0`), texts byte by byte,
/// each kind ordered apart from the others.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Null,
    Bool(bool),
    Number(f64),
    Text(Box<str>),
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Key::Null => 0,
            Key::Bool(_) => 1,
            Key::Number(_) => 2,
            Key::Text(_) => 3,
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// The key of a scalar value; `None` for arrays, objects and long texts.
    fn of(value: &Metadata) -> Option<Key> {
        Some(match value {
            Metadata::Null => Key::Null,
            Metadata::Bool(b) => Key::Bool(*b),
            Metadata::Number(n) => Key::Number(number(n.as_f64()?)),
            Metadata::Text(s) if s.len() <= LONG_TEXT => Key::Text(s.clone()),
            _ => return None,
        })
    }

    fn operand(operand: &Operand) -> Key {
        match operand {
            Operand::Text(s) => Key::Text(s.as_str().into()),
            Operand::Number(n) => Key::Number(number(*n)),
            Operand::Bool(b) => Key::Bool(*b),
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Key>()
            + match self {
                Key::Text(s) => s.len(),
                _ => 0,
            }
    }
}

fn number(n: f64) -> f64 {
    if n == 0.0 {
        0.0
    } else {
        n
    }
}

fn set(mask: &mut Mask, row: usize) {
    mask[row / 64] |= 1 << (row % 64);
}

fn and(a: Mask, b: Mask) -> Mask {
    std::array::from_fn(|i| a[i] & b[i])
}

fn or(a: Mask, b: Mask) -> Mask {
    std::array::from_fn(|i| a[i] | b[i])
}

fn complement(a: Mask) -> Mask {
    a.map(|w| !w)
}

fn and_not(a: Mask, b: Mask) -> Mask {
    std::array::from_fn(|i| a[i] & !b[i])
}

pub fn is_empty(mask: &Mask) -> bool {
    mask.iter().all(|w| *w == 0)
}

/// The rows set in `mask`, in order.
pub fn rows(mask: Mask) -> impl Iterator<Item = usize> {
    mask.into_iter().enumerate().flat_map(|(w, mut word)| {
        std::iter::from_fn(move || {
            (word != 0).then(|| {
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                w * 64 + bit
            })
        })
    })
}

impl Columns {
    /// The columns of these rows (at most [`ROWS`]).
    pub fn build(rows: &[Metadata]) -> Columns {
        debug_assert!(rows.len() <= ROWS);
        let mut found: Found = HashMap::new();
        for (row, metadata) in rows.iter().enumerate() {
            collect(metadata, &mut String::new(), row, &mut found);
        }
        let mut paths: Vec<(Box<str>, Column)> = found
            .into_iter()
            .map(|(path, (mut column, mut pairs))| {
                pairs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
                pairs.dedup();
                // starts[i] is where the rows of keys[i] begin; the last entry ends them.
                for (key, row) in pairs {
                    if column
                        .keys
                        .last()
                        .is_none_or(|last| last.cmp(&key) != Ordering::Equal)
                    {
                        column.keys.push(key);
                        column.starts.push(column.rows.len() as u16);
                    }
                    column.rows.push(row);
                }
                column.starts.push(column.rows.len() as u16);
                (path.into_boxed_str(), column)
            })
            .collect();
        paths.sort_by(|a, b| a.0.cmp(&b.0));
        Columns { paths }
    }

    /// Bytes held (an estimate: allocator overhead is not counted).
    pub fn bytes(&self) -> usize {
        self.paths
            .iter()
            .map(|(path, c)| {
                path.len()
                    + std::mem::size_of::<(Box<str>, Column)>()
                    + c.keys.iter().map(Key::bytes).sum::<usize>()
                    + c.starts.len() * 2
                    + c.rows.len()
            })
            .sum()
    }

    /// The rows of `within` that `filter` matches; `rows` is the chunk's metadata, for what
    /// the columns leave to [`Filter::matches`]. Never asked about `$regex`.
    pub fn matching(&self, filter: &Filter, within: Mask, rows: &[Metadata]) -> Mask {
        if is_empty(&within) {
            return within;
        }
        match filter {
            Filter::Const(true) => within,
            Filter::Const(false) => NONE,
            Filter::And(parts) => parts
                .iter()
                .fold(within, |left, part| self.matching(part, left, rows)),
            Filter::Or(parts) => {
                let (mut found, mut left) = (NONE, within);
                for part in parts {
                    let hit = self.matching(part, left, rows);
                    found = or(found, hit);
                    left = and_not(left, hit);
                }
                found
            }
            Filter::Not(inner) => and_not(within, self.matching(inner, within, rows)),
            Filter::Exists(path) => self.column(path).map_or(NONE, |c| and(within, c.present)),
            Filter::NotNull(path) => self
                .column(path)
                .map_or(NONE, |c| and(within, and_not(c.present, c.null))),
            Filter::Any(path, test) => match self.column(path) {
                None => {
                    // The field is missing in every row: the test sees an absent value.
                    let absent = match test {
                        Candidate::Null => true,
                        Candidate::OneOf { null, .. } => *null,
                        Candidate::Compare(..) | Candidate::Regex(_) => false,
                    };
                    if absent {
                        within
                    } else {
                        NONE
                    }
                }
                Some(column) => {
                    let (hit, unsure) = column.candidates(test);
                    let sure = and(within, hit);
                    or(sure, by_row(filter, and_not(and(within, unsure), sure), rows))
                }
            },
            Filter::Substring(..) | Filter::Size(..) | Filter::ElemMatch(..) => by_row(filter, within, rows),
        }
    }

    fn column(&self, path: &Path) -> Option<&Column> {
        self.paths
            .binary_search_by(|(name, _)| joined_cmp(name, &path.segments))
            .ok()
            .map(|i| &self.paths[i].1)
    }
}

/// `name` against the segments joined by `.`, without joining them.
fn joined_cmp(name: &str, segments: &[String]) -> Ordering {
    let joined = segments
        .iter()
        .enumerate()
        .flat_map(|(i, s)| (if i == 0 { "" } else { "." }).bytes().chain(s.bytes()));
    name.bytes().cmp(joined)
}

/// The rows of `within` that match, asked row by row.
fn by_row(filter: &Filter, within: Mask, rows: &[Metadata]) -> Mask {
    let mut found = NONE;
    for row in self::rows(within) {
        if filter.matches(&rows[row]) {
            set(&mut found, row);
        }
    }
    found
}

/// Per path while building: its column, and its (value, row) pairs not yet sorted.
type Found = HashMap<String, (Column, Vec<(Key, u8)>)>;

/// Record every path of `value` (an object; other values have no paths) for `row`.
fn collect(value: &Metadata, prefix: &mut String, row: usize, found: &mut Found) {
    let Metadata::Object(pairs) = value else {
        return;
    };
    for (key, field) in pairs.iter() {
        if key.contains('.') {
            continue;
        }
        let before = prefix.len();
        if before > 0 {
            prefix.push('.');
        }
        prefix.push_str(key);
        let (column, keys) = found.entry(prefix.clone()).or_default();
        set(&mut column.present, row);
        let mut add = |item: &Metadata| match Key::of(item) {
            Some(k) => keys.push((k, row as u8)),
            None if matches!(item, Metadata::Text(_)) => set(&mut column.long, row),
            None => {}
        };
        match field {
            Metadata::Array(items) => items.iter().for_each(&mut add),
            Metadata::Object(_) => collect(field, prefix, row, found),
            Metadata::Null => {
                set(&mut column.null, row);
                add(field)
            }
            scalar => add(scalar),
        }
        prefix.truncate(before);
    }
}

impl Column {
    fn holding(&self, i: usize) -> Mask {
        let mut mask = NONE;
        for row in &self.rows[self.starts[i] as usize..self.starts[i + 1] as usize] {
            set(&mut mask, *row as usize);
        }
        mask
    }

    fn equal(&self, key: &Key) -> Mask {
        match self.keys.binary_search_by(|k| k.cmp(key)) {
            Ok(i) => self.holding(i),
            Err(_) => NONE,
        }
    }

    /// For one candidate test: the rows that surely pass, and the rows that must be asked
    /// row by row (they hold a long text the test could be about).
    fn candidates(&self, test: &Candidate) -> (Mask, Mask) {
        match test {
            Candidate::Null => (or(complement(self.present), self.equal(&Key::Null)), NONE),
            Candidate::Compare(operand, cmp) => self.compare(operand, *cmp),
            Candidate::OneOf { values, null } => {
                let mut sure = if *null {
                    or(complement(self.present), self.equal(&Key::Null))
                } else {
                    NONE
                };
                let mut unsure = NONE;
                for value in values {
                    let (s, u) = self.compare(value, Cmp::Eq);
                    sure = or(sure, s);
                    unsure = or(unsure, u);
                }
                (sure, unsure)
            }
            Candidate::Regex(_) => (NONE, NONE),
        }
    }

    fn compare(&self, operand: &Operand, cmp: Cmp) -> (Mask, Mask) {
        let key = Key::operand(operand);
        let unsure = match operand {
            Operand::Text(s) if cmp != Cmp::Eq || s.len() > LONG_TEXT => self.long,
            _ => NONE,
        };
        if cmp == Cmp::Eq {
            return (self.equal(&key), unsure);
        }
        // The keys of the operand's kind, then the part of them on the wanted side.
        let kind_start = self.keys.partition_point(|k| k.rank() < key.rank());
        let kind_end = self.keys.partition_point(|k| k.rank() <= key.rank());
        let below = self.keys.partition_point(|k| k.cmp(&key) == Ordering::Less);
        let upto = self.keys.partition_point(|k| k.cmp(&key) != Ordering::Greater);
        let range = match cmp {
            Cmp::Gt => upto..kind_end,
            Cmp::Gte => below..kind_end,
            Cmp::Lt => kind_start..below,
            Cmp::Lte => kind_start..upto,
            Cmp::Eq => unreachable!("handled above"),
        };
        let mut sure = NONE;
        for i in range {
            sure = or(sure, self.holding(i));
        }
        (sure, unsure)
    }
}
