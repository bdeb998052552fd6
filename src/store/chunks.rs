//! What a long text looks like as rows: a document embedded in pieces (chunks) is stored as
//! one row per chunk in the index's own table, so Mastra's stores read them as ordinary
//! rows. Chunk `n` of document `<id>` is the row `<id>#<n>` (from 0); the document's own id
//! then has no row. Each chunk row holds the document's metadata, its own piece of the text
//! in the index's text field, and `chunk: {doc, n, count, start, end}` (`start..end`: the
//! piece's span in the document's text, in characters, i.e. Unicode scalar values). A text
//! that fits the model's window stays one row under its id, without `chunk`.
//!
//! This module owns that shape and nothing else: the row ids of a document, finding a
//! document's rows among rows read by id, reading a row's place back, building a chunk's
//! metadata, keeping a chunk's own fields through a metadata change, and putting a document
//! back together for `fetch`. The back-ends call it inside their write transactions (so
//! every write kind on an id acts on all of its rows), and `Store` for its reads; it runs
//! no SQL and never decides how a text is split (that is `embed::chunk`).

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use super::api::{chunk_shaped, EmbeddedPiece, CHUNK_KEY};
use super::api::{Hit, StoreError, VectorRow};

/// The row id of chunk `n` of `doc`.
pub fn chunk_id(doc: &str, n: usize) -> String {
    format!("{doc}#{n}")
}

/// A document's stored rows, in order: (row id, metadata).
pub type DocumentRows = Vec<(String, Map<String, Value>)>;

/// Rows read by id: the metadata of each one that exists.
pub type RowsById = HashMap<String, Map<String, Value>>;

/// The ids to read to find the rows of `docs`: each id, and its chunk 0.
pub fn head_ids(docs: &[String]) -> Vec<String> {
    docs.iter().flat_map(|d| [d.clone(), chunk_id(d, 0)]).collect()
}

/// How many chunks `doc` is stored in, from its rows read by [`head_ids`] (0: none).
fn stored_count(doc: &str, heads: &RowsById) -> usize {
    let head = chunk_id(doc, 0);
    heads
        .get(&head)
        .and_then(|m| chunk_of(&head, m))
        .filter(|c| c.doc == doc)
        .map_or(0, |c| c.count)
}

/// The further ids to read for the chunks of `docs`, once their heads are read.
pub fn more_ids(docs: &[String], heads: &RowsById) -> Vec<String> {
    docs.iter()
        .flat_map(|d| (1..stored_count(d, heads)).map(move |n| chunk_id(d, n)))
        .collect()
}

/// The stored rows of each of `docs` that has any, in order: its own row, and its chunks
/// (from `heads`, read by [`head_ids`], and `more`, read by [`more_ids`]).
pub fn group_rows(docs: &[String], heads: &RowsById, more: &RowsById) -> Vec<(String, DocumentRows)> {
    let mut out = Vec::new();
    for doc in docs {
        let mut rows = DocumentRows::new();
        if let Some(m) = heads.get(doc) {
            rows.push((doc.clone(), m.clone()));
        }
        let count = stored_count(doc, heads);
        for n in 0..count {
            let id = chunk_id(doc, n);
            if let Some(m) = heads.get(&id).or_else(|| more.get(&id)) {
                rows.push((id, m.clone()));
            }
        }
        if !rows.is_empty() {
            out.push((doc.clone(), rows));
        }
    }
    out
}

/// Rows (by id, as a filter matched them) grouped under the documents they belong to: a
/// chunk row under its document, any other row under its own id.
pub fn by_document(rows: &DocumentRows) -> Vec<(String, DocumentRows)> {
    let mut by_doc: std::collections::BTreeMap<String, DocumentRows> = Default::default();
    for (id, m) in rows {
        by_doc
            .entry(document_of(id, m))
            .or_default()
            .push((id.clone(), m.clone()));
    }
    by_doc.into_iter().collect()
}

/// An update's vector cannot go to a long text's chunks (each has its own): refused, naming
/// the document.
pub fn check_no_chunks(documents: &[(String, DocumentRows)]) -> Result<(), StoreError> {
    match documents.iter().flat_map(|(_, rows)| rows).find_map(|(id, m)| chunk_of(id, m)) {
        Some(c) => Err(StoreError::invalid(format!(
            "vector: id {:?} is a long text stored in {} chunks, each with its own vector; give it a new text with `embed`, or replace it whole with `upsert`",
            c.doc, c.count
        ))),
        None => Ok(()),
    }
}

/// An upsert may not overwrite one chunk of a long text (the document would lose its
/// shape): refused, naming the row and its document. `stored` holds the rows of `ids` read.
pub fn check_not_a_chunk(ids: &[String], stored: &RowsById) -> Result<(), StoreError> {
    for (at, id) in ids.iter().enumerate() {
        if let Some(c) = stored.get(id).and_then(|m| chunk_of(id, m)) {
            return Err(StoreError::invalid(format!(
                "vectors[{at}] (id {id:?}): this row is chunk {} of the long text {:?} that `embed` stored; write {:?} itself (embed or upsert), or delete it first",
                c.n, c.doc, c.doc
            )));
        }
    }
    Ok(())
}

/// Metadata as a back-end reads it back: an object, or (anything else) an empty one.
pub fn object_or_empty(value: Option<Value>) -> Map<String, Value> {
    match value {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The documents a write names by `ids` (read into `rows`): a chunk's id stands for its
/// whole document; any other id for itself. Distinct, in order. (The rows named stay the
/// write's too: a chunk row whose document lost its first chunk is still reached.)
pub fn documents_named(ids: &[String], rows: &RowsById) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .map(|id| rows.get(id).map_or_else(|| id.clone(), |m| document_of(id, m)))
        .filter(|d| seen.insert(d.clone()))
        .collect()
}

/// A chunk row's place in its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOf {
    pub doc: String,
    pub n: usize,
    pub count: usize,
    pub start: u64,
    pub end: u64,
}

impl ChunkOf {
    fn to_value(&self) -> Value {
        serde_json::json!({
            "doc": self.doc, "n": self.n, "count": self.count, "start": self.start, "end": self.end,
        })
    }
}

/// The place of row `id` in its document, when it is a chunk row: its metadata holds a
/// well-formed `chunk` whose document and number give back this very id. Anything else
/// (a row written with a `chunk` of the caller's own) is an ordinary row.
pub fn chunk_of(id: &str, metadata: &Map<String, Value>) -> Option<ChunkOf> {
    let chunk = metadata.get(CHUNK_KEY)?.as_object()?;
    let number = |k: &str| chunk.get(k).and_then(Value::as_u64);
    let of = ChunkOf {
        doc: chunk.get("doc")?.as_str()?.to_string(),
        n: number("n")? as usize,
        count: number("count")? as usize,
        start: number("start")?,
        end: number("end")?,
    };
    (of.count >= 2 && of.n < of.count && chunk_id(&of.doc, of.n) == id).then_some(of)
}

/// The document a row belongs to: its own id, or for a chunk row its document's.
pub fn document_of(id: &str, metadata: &Map<String, Value>) -> String {
    chunk_of(id, metadata).map_or_else(|| id.to_string(), |c| c.doc)
}

/// The rows of a document embedded in `pieces` (one piece: the document's own row with its
/// metadata as it is). `metadata` is the document's (its text field holding the whole text,
/// when the index keeps text). A piece whose span does not fit `text` is refused.
pub fn piece_rows(
    doc: &str,
    text: &str,
    metadata: &Map<String, Value>,
    text_field: Option<&str>,
    pieces: &[EmbeddedPiece],
) -> Result<Vec<VectorRow>, StoreError> {
    if let [one] = pieces {
        return Ok(vec![VectorRow {
            id: doc.to_string(),
            vector: one.vector.clone(),
            metadata: metadata.clone(),
        }]);
    }
    let count = pieces.len();
    let mut rows = Vec::with_capacity(count);
    // Character offsets of every span end, in one pass over the text.
    let mut bounds: Vec<usize> = pieces.iter().flat_map(|p| [p.start, p.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut offsets = HashMap::with_capacity(bounds.len());
    let (mut byte, mut chars) = (0usize, 0u64);
    for b in bounds {
        if let Some(step) = text.get(byte..b) {
            chars += step.chars().count() as u64;
            byte = b;
            offsets.insert(b, chars);
        }
    }
    let char_at = |to: usize| offsets.get(&to).copied();
    for (n, piece) in pieces.iter().enumerate() {
        let bad = || {
            StoreError::Internal(format!(
                "chunk {n} of id {doc:?}: span {}..{} is not in its text",
                piece.start, piece.end
            ))
        };
        let piece_text = text.get(piece.start..piece.end).ok_or_else(bad)?;
        let start = char_at(piece.start).ok_or_else(bad)?;
        let end = char_at(piece.end).ok_or_else(bad)?;
        let mut m = metadata.clone();
        if let Some(field) = text_field {
            m.insert(field.to_string(), Value::String(piece_text.to_string()));
        }
        let place = ChunkOf {
            doc: doc.to_string(),
            n,
            count,
            start,
            end,
        };
        m.insert(CHUNK_KEY.to_string(), place.to_value());
        rows.push(VectorRow {
            id: chunk_id(doc, n),
            vector: piece.vector.clone(),
            metadata: m,
        });
    }
    Ok(rows)
}

/// After a metadata change on row `id` (a merge, a replacement, or an unchanged document's
/// new metadata), give a chunk row back its own fields: its place, and its piece of the
/// text where the document's whole text or nothing would now be. Returns whether `new`
/// changed. An ordinary row is left as it is.
pub fn keep_chunk_fields(
    id: &str,
    new: &mut Map<String, Value>,
    old: &Map<String, Value>,
    text_field: Option<&str>,
) -> bool {
    if chunk_of(id, old).is_none() {
        return false;
    }
    let mut changed = false;
    let mut restore = |key: &str| {
        if let Some(v) = old.get(key) {
            if new.get(key) != Some(v) {
                new.insert(key.to_string(), v.clone());
                changed = true;
            }
        }
    };
    restore(CHUNK_KEY);
    if let Some(field) = text_field {
        restore(field);
    }
    changed
}

/// A chunked document's part in a `fetch` answer: a chunk row's id and span.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ChunkSpan {
    pub id: String,
    /// Its span in the document's text, in characters.
    pub start: u64,
    pub end: u64,
}

/// A document put back together from all of its chunk rows (chunk 0 first, as
/// [`group_rows`] gives them): its id, chunk 0's vector, its metadata with the whole text in the text field and
/// no `chunk`, and its chunks' spans. `None` when the rows are not one whole document
/// (a write changed it between two reads): the caller reads again.
pub fn assemble(rows: &[Hit], text_field: Option<&str>) -> Option<(Hit, Vec<ChunkSpan>)> {
    let first = rows.first()?;
    let head = chunk_of(&first.id, &first.metadata).filter(|c| c.n == 0)?;
    if rows.len() != head.count {
        return None;
    }
    let mut text = String::new();
    let mut text_chars = 0u64;
    let mut spans = Vec::with_capacity(rows.len());
    for (n, row) in rows.iter().enumerate() {
        let place = chunk_of(&row.id, &row.metadata)?;
        if place.doc != head.doc || place.n != n || place.count != head.count || place.start > text_chars {
            return None;
        }
        if let Some(piece) = text_field
            .and_then(|f| row.metadata.get(f))
            .and_then(Value::as_str)
        {
            // The piece starts inside what we have (the overlap) or right after it.
            let skip = (text_chars - place.start) as usize;
            let rest: String = piece.chars().skip(skip).collect();
            text_chars += rest.chars().count() as u64;
            text.push_str(&rest);
        } else {
            text_chars = place.end;
        }
        spans.push(ChunkSpan {
            id: row.id.clone(),
            start: place.start,
            end: place.end,
        });
    }
    let mut metadata = first.metadata.clone();
    metadata.remove(CHUNK_KEY);
    if let Some(field) = text_field.filter(|f| metadata.contains_key(*f)) {
        metadata.insert(field.to_string(), Value::String(text));
    }
    let hit = Hit {
        id: head.doc,
        score: first.score,
        metadata,
        vector: first.vector.clone(),
        found_by: None,
    };
    Some((hit, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: usize, end: usize) -> EmbeddedPiece {
        EmbeddedPiece {
            start,
            end,
            vector: vec![start as f32 + 1.0],
        }
    }

    fn hits(rows: Vec<VectorRow>) -> Vec<Hit> {
        rows.into_iter()
            .map(|r| Hit {
                id: r.id,
                score: 0.0,
                metadata: r.metadata,
                vector: Some(r.vector),
                found_by: None,
            })
            .collect()
    }

    #[test]
    fn rows_carry_places_and_assemble_back_to_the_text() {
        let text = "Été brûlant. Deuxième phrase ici. Troisième et dernière.";
        let at = |s: &str| text.find(s).unwrap();
        let pieces = [piece(0, at(" Troisième")), piece(at("Deuxième"), text.len())];
        let mut meta = Map::new();
        meta.insert("text".into(), Value::String(text.into()));
        meta.insert("user".into(), Value::from("u1"));
        let rows = piece_rows("d", text, &meta, Some("text"), &pieces).unwrap();
        assert_eq!(rows[0].id, "d#0");
        assert_eq!(rows[1].id, "d#1");
        let place = chunk_of(&rows[1].id, &rows[1].metadata).unwrap();
        assert_eq!((place.n, place.count), (1, 2));
        let chars: Vec<char> = text.chars().collect();
        let piece_text: String = chars[place.start as usize..place.end as usize].iter().collect();
        assert_eq!(rows[1].metadata["text"], Value::String(piece_text));
        let read: RowsById = rows.iter().map(|r| (r.id.clone(), r.metadata.clone())).collect();
        let docs = vec!["d".to_string()];
        assert_eq!(head_ids(&docs), ["d", "d#0"]);
        assert_eq!(more_ids(&docs, &read), ["d#1"]);
        let grouped = group_rows(&docs, &read, &RowsById::new());
        assert_eq!(
            grouped[0].1.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["d#0", "d#1"]
        );
        assert_eq!(
            documents_named(&["d#1".to_string(), "e".to_string()], &read),
            ["d", "e"]
        );
        assert_eq!(document_of("d#1", &rows[1].metadata), "d");
        let (doc, spans) = assemble(&hits(rows.clone()), Some("text")).unwrap();
        assert_eq!(doc.id, "d");
        assert_eq!(doc.metadata["text"], Value::String(text.into()));
        assert_eq!(doc.metadata["user"], Value::from("u1"));
        assert!(!doc.metadata.contains_key(CHUNK_KEY));
        assert_eq!(spans.len(), 2);
        // A missing or foreign row is not a whole document.
        assert!(assemble(&hits(rows[..1].to_vec()), Some("text")).is_none());
        // One piece: the document's own row, as it is.
        let one = piece_rows("d", text, &meta, Some("text"), &[piece(0, text.len())]).unwrap();
        assert_eq!((one.len(), one[0].id.as_str(), &one[0].metadata), (1, "d", &meta));
    }

    #[test]
    fn a_chunk_of_the_callers_own_is_an_ordinary_row() {
        let mut meta = Map::new();
        meta.insert(
            CHUNK_KEY.into(),
            serde_json::json!({"doc": "x", "n": 1, "count": 3, "start": 0, "end": 4}),
        );
        assert!(chunk_of("y#1", &meta).is_none());
        assert!(chunk_of("x#1", &meta).is_some());
        meta.insert(CHUNK_KEY.into(), Value::from("mine"));
        assert!(chunk_of("x#1", &meta).is_none());
    }

    #[test]
    fn chunk_fields_survive_a_replacement() {
        let text = "One. Two.";
        let mut meta = Map::new();
        meta.insert("text".into(), Value::String(text.into()));
        let rows = piece_rows("d", text, &meta, Some("text"), &[piece(0, 4), piece(5, 9)]).unwrap();
        let old = &rows[1].metadata;
        let mut new = Map::new();
        new.insert("text".into(), Value::String(text.into()));
        new.insert("tag".into(), Value::from(1));
        assert!(keep_chunk_fields("d#1", &mut new, old, Some("text")));
        assert_eq!(new["text"], Value::from("Two."));
        assert_eq!(new[CHUNK_KEY], old[CHUNK_KEY]);
        assert!(!keep_chunk_fields("d#1", &mut new, old, Some("text")));
        let mut plain = Map::new();
        assert!(!keep_chunk_fields("z", &mut plain, &meta, Some("text")));
    }
}
