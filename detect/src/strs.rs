//! A string column as detect reads it: `Utf8` from batches built in memory (rule samples,
//! tests), `Utf8View` from lake files. Views point into the decoded pages and dictionaries
//! instead of copying every value into a fresh, growing buffer, which was a tenth of a run over a
//! compacted lake in copies and reallocations.

use arrow_array::cast::AsArray;
use arrow_array::{Array, StringArray, StringViewArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields, Schema};

/// A borrowed string column of either layout.
#[derive(Debug, Clone, Copy)]
pub enum Strs<'a> {
    Utf8(&'a StringArray),
    View(&'a StringViewArray),
}

impl<'a> Strs<'a> {
    /// The array as strings, when it is `Utf8` or `Utf8View`.
    pub fn of(a: &'a dyn Array) -> Option<Self> {
        match a.data_type() {
            DataType::Utf8 => a.as_string_opt::<i32>().map(Strs::Utf8),
            DataType::Utf8View => a.as_string_view_opt().map(Strs::View),
            _ => None,
        }
    }

    #[inline(always)]
    pub fn is_valid(&self, i: usize) -> bool {
        match *self {
            Strs::Utf8(a) => a.is_valid(i),
            Strs::View(a) => a.is_valid(i),
        }
    }

    /// Row `i`'s text, whether or not it is null (as arrow's `value`).
    #[inline(always)]
    pub fn value(&self, i: usize) -> &'a str {
        match *self {
            Strs::Utf8(a) => a.value(i),
            Strs::View(a) => a.value(i),
        }
    }

    /// Row `i`'s text, `None` when null.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&'a str> {
        // One dispatch, not one in `is_valid` and another in `value`: this runs for every
        // string of every row.
        match *self {
            Strs::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }

    pub fn nulls(&self) -> Option<&'a NullBuffer> {
        match *self {
            Strs::Utf8(a) => a.nulls(),
            Strs::View(a) => a.nulls(),
        }
    }
}

/// `schema` with its `Utf8` columns, and those of structs below them, read as `Utf8View`: the
/// hint detect gives the Parquet reader. Lists and maps keep `Utf8`.
pub fn with_views(schema: &Schema) -> Schema {
    fn field(f: &Field) -> Field {
        match f.data_type() {
            DataType::Utf8 => f.clone().with_data_type(DataType::Utf8View),
            DataType::Struct(children) => {
                f.clone().with_data_type(DataType::Struct(children.iter().map(|c| field(c)).collect::<Fields>()))
            }
            _ => f.clone(),
        }
    }
    Schema::new_with_metadata(schema.fields().iter().map(|f| field(f)).collect::<Fields>(), schema.metadata().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn both_layouts_read_alike() {
        let rows = [Some("a"), None, Some("a string longer than twelve bytes")];
        let plain = StringArray::from(rows.to_vec());
        let view = StringViewArray::from(rows.to_vec());
        for s in [Strs::of(&plain).unwrap(), Strs::of(&view).unwrap()] {
            assert_eq!((0..3).map(|i| s.get(i)).collect::<Vec<_>>(), rows);
            assert_eq!(s.nulls().map(|n| n.null_count()), Some(1));
        }
        assert!(Strs::of(&arrow_array::Int64Array::from(vec![1])).is_none());
    }

    #[test]
    fn views_replace_top_level_and_struct_strings_only() {
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let s = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new_struct("st", vec![Field::new("b", DataType::Utf8, true)], true),
            Field::new("l", DataType::List(item.clone()), true),
        ]);
        let v = with_views(&s);
        assert_eq!(v.field(0).data_type(), &DataType::Utf8View);
        assert_eq!(v.field(1).data_type(), &DataType::Int64);
        assert_eq!(v.field(2).data_type(), &DataType::Struct(vec![Field::new("b", DataType::Utf8View, true)].into()));
        assert_eq!(v.field(3).data_type(), &DataType::List(item));
    }
}
