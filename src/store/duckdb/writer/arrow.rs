//! The Arrow batch that carries rows into DuckDB's appender (the duckdb crate cannot bind
//! array values, and text would be slow).
//!
//! Building only: it runs no SQL and holds no connection.

use std::sync::Arc;

use duckdb::arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, StringArray};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::arrow::record_batch::RecordBatch;
use serde_json::Value;

use super::OpError;
use crate::store::api::VectorRow;

pub(super) fn record_batch(dimension: usize, rows: &[VectorRow]) -> Result<RecordBatch, OpError> {
    let arrow_err =
        |e: duckdb::arrow::error::ArrowError| OpError::Failed(format!("building the Arrow batch: {e}"));
    let width = i32::try_from(dimension).map_err(|_| OpError::Failed("dimension too large".into()))?;
    let ids = StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()));
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.vector.iter().copied()).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors = FixedSizeListArray::try_new(item.clone(), width, Arc::new(Float32Array::from(flat)), None)
        .map_err(arrow_err)?;
    let metadata =
        StringArray::from_iter_values(rows.iter().map(|r| Value::Object(r.metadata.clone()).to_string()));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("vector", DataType::FixedSizeList(item, width), false),
        Field::new("metadata", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(vectors), Arc::new(metadata)];
    RecordBatch::try_new(Arc::new(schema), columns).map_err(arrow_err)
}
