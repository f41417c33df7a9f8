//! [`Table`]: named, typed columns of equal length — every result table genir writes (patching sweeps, lens
//! readings, per-query metrics, edit evaluations) — with CSV output and, with the `parquet` feature (on by
//! default), Parquet reading and writing through the Apache `parquet` crate.
//!
//! Parquet files are written with one row group, zstd compression and dictionary encoding; strings are
//! `BYTE_ARRAY` annotated `STRING`, `u32` columns `INT32` annotated unsigned. Reading accepts any flat Parquet file
//! (pyarrow, polars, pandas, DuckDB, Spark): every compression the format defines but LZO, dictionary and plain
//! encodings, nulls (kept as a validity mask), `INT32`/`INT64` with any integer annotation, `FLOAT`/`DOUBLE`,
//! `BOOLEAN` and UTF-8 `BYTE_ARRAY`. Other columns (nested lists, decimals, timestamps) are not read; asking for
//! one names the column and says why.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// UTF-8 strings.
    Str(Vec<String>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 32-bit floats (written as Parquet `FLOAT`, printed with `f32`'s shortest form).
    F32(Vec<f32>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
    /// 32-bit signed integers.
    I32(Vec<i32>),
    /// 32-bit unsigned integers.
    U32(Vec<u32>),
    /// Booleans.
    Bool(Vec<bool>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Str(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type's name, as errors print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Values::Str(_) => "string",
            Values::F64(_) => "f64",
            Values::F32(_) => "f32",
            Values::I64(_) => "i64",
            Values::I32(_) => "i32",
            Values::U32(_) => "u32",
            Values::Bool(_) => "bool",
        }
    }
}

macro_rules! values_from {
    ($t:ty, $variant:ident, $conv:expr) => {
        impl From<Vec<$t>> for Values {
            fn from(v: Vec<$t>) -> Self {
                Values::$variant(v.into_iter().map($conv).collect())
            }
        }
    };
}
values_from!(String, Str, |x| x);
values_from!(&str, Str, |x: &str| x.to_string());
values_from!(&String, Str, |x: &String| x.clone());
values_from!(f64, F64, |x| x);
values_from!(f32, F32, |x| x);
values_from!(i64, I64, |x| x);
values_from!(i32, I32, |x| x);
values_from!(u32, U32, |x| x);
values_from!(bool, Bool, |x| x);
values_from!(usize, I64, |x: usize| i64::try_from(x).unwrap_or(i64::MAX));

/// A named column: values and, when some are null, a validity mask (`true` = present).
///
/// Two columns are equal when their names, types and null rows agree and so do their values at the other rows
/// (NaN equals NaN; the placeholders at null rows are not compared).
#[derive(Debug, Clone)]
pub struct Column {
    name: String,
    values: Values,
    valid: Option<Vec<bool>>,
}

impl Column {
    /// A column without nulls.
    pub fn new(name: impl Into<String>, values: impl Into<Values>) -> Self {
        Column {
            name: name.into(),
            values: values.into(),
            valid: None,
        }
    }

    /// A column with nulls where `values` has `None`.
    pub fn from_options<T: Default>(name: impl Into<String>, values: Vec<Option<T>>) -> Self
    where
        Vec<T>: Into<Values>,
    {
        let valid: Vec<bool> = values.iter().map(Option::is_some).collect();
        let plain: Vec<T> = values.into_iter().map(Option::unwrap_or_default).collect();
        Column {
            name: name.into(),
            values: plain.into(),
            valid: (!valid.iter().all(|&v| v)).then_some(valid),
        }
    }

    /// A column with a validity mask (`valid[i]` false: row `i` is null; its value is a placeholder).
    pub fn with_validity(mut self, valid: Vec<bool>) -> Result<Self> {
        if valid.len() != self.values.len() {
            return Err(Error::Table(format!(
                "column `{}`: {} validity flags for {} values",
                self.name,
                valid.len(),
                self.values.len()
            )));
        }
        self.valid = (!valid.iter().all(|&v| v)).then_some(valid);
        Ok(self)
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The values (placeholders at null rows).
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether row `i` is null.
    pub fn is_null(&self, i: usize) -> bool {
        self.valid.as_ref().is_some_and(|v| !v[i])
    }

    /// Number of null rows.
    pub fn null_count(&self) -> usize {
        self.valid
            .as_ref()
            .map_or(0, |v| v.iter().filter(|&&x| !x).count())
    }

    fn type_error(&self, wanted: &str) -> Error {
        Error::Table(format!(
            "column `{}` is {}, not readable as {wanted}",
            self.name,
            self.values.type_name()
        ))
    }

    /// The values as `f64` (integers and booleans converted; nulls as NaN).
    pub fn f64s(&self) -> Result<Vec<f64>> {
        let v: Vec<f64> = match &self.values {
            Values::F64(v) => v.clone(),
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Values::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
            Values::Str(_) => return Err(self.type_error("f64")),
        };
        Ok(self.masked(v, f64::NAN))
    }

    /// The values as `i64` (floats only when integral; nulls and NaN as -1).
    pub fn i64s(&self) -> Result<Vec<i64>> {
        let v: Vec<i64> = match &self.values {
            Values::I64(v) => v.clone(),
            Values::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Values::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Values::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Values::F64(_) | Values::F32(_) => {
                let v = self.f64s()?;
                let mut out = Vec::with_capacity(v.len());
                for (i, &x) in v.iter().enumerate() {
                    if x.is_nan() {
                        // a null or NaN: the null marker below
                        out.push(-1);
                    } else if x.fract() == 0.0 && x.abs() < 9.0e15 {
                        out.push(x as i64);
                    } else {
                        return Err(Error::Table(format!(
                            "column `{}`, row {}: {x} is not an integer",
                            self.name,
                            i + 1
                        )));
                    }
                }
                out
            }
            Values::Str(_) => return Err(self.type_error("i64")),
        };
        Ok(self.masked(v, -1))
    }

    /// The values as strings (numbers formatted as the CSV writer does; nulls as "").
    pub fn strs(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.text(i)).collect()
    }

    /// The string values, `None` at null rows; an error for a column that is not a string column.
    pub fn opt_strs(&self) -> Result<Vec<Option<&str>>> {
        match &self.values {
            Values::Str(v) => Ok(v
                .iter()
                .enumerate()
                .map(|(i, s)| (!self.is_null(i)).then_some(s.as_str()))
                .collect()),
            _ => Err(self.type_error("string")),
        }
    }

    fn masked<T: Clone>(&self, mut v: Vec<T>, null: T) -> Vec<T> {
        if let Some(valid) = &self.valid {
            for (x, &ok) in v.iter_mut().zip(valid) {
                if !ok {
                    *x = null.clone();
                }
            }
        }
        v
    }

    /// Row `i` as text: strings as they are, floats by `{}` (NaN as `NaN`), nulls empty.
    pub fn text(&self, i: usize) -> String {
        if self.is_null(i) {
            return String::new();
        }
        match &self.values {
            Values::Str(v) => v[i].clone(),
            Values::F64(v) => fmt_f64(v[i]),
            Values::F32(v) => {
                if v[i].is_nan() {
                    "NaN".into()
                } else {
                    format!("{}", v[i])
                }
            }
            Values::I64(v) => v[i].to_string(),
            Values::I32(v) => v[i].to_string(),
            Values::U32(v) => v[i].to_string(),
            Values::Bool(v) => v[i].to_string(),
        }
    }
}

impl PartialEq for Column {
    fn eq(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(a: &[T], b: &[T], i: usize) -> bool {
            a[i] == b[i]
        }
        let float = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
        self.name == other.name
            && self.len() == other.len()
            && (0..self.len()).all(|i| {
                let null = self.is_null(i);
                null == other.is_null(i)
                    && (null
                        || match (&self.values, &other.values) {
                            (Values::Str(a), Values::Str(b)) => same(a, b, i),
                            (Values::F64(a), Values::F64(b)) => float(a[i], b[i]),
                            (Values::F32(a), Values::F32(b)) => {
                                float(f64::from(a[i]), f64::from(b[i]))
                            }
                            (Values::I64(a), Values::I64(b)) => same(a, b, i),
                            (Values::I32(a), Values::I32(b)) => same(a, b, i),
                            (Values::U32(a), Values::U32(b)) => same(a, b, i),
                            (Values::Bool(a), Values::Bool(b)) => same(a, b, i),
                            _ => false,
                        })
            })
            && std::mem::discriminant(&self.values) == std::mem::discriminant(&other.values)
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// Named columns of equal length. Two tables are equal when their columns are, in order.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<Column>,
    height: usize,
    /// Columns of a Parquet file that were not read, with the reason.
    unread: Vec<(String, String)>,
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.columns == other.columns
    }
}

impl Table {
    /// A table of `columns`; an error when their lengths differ or a name repeats.
    pub fn new(columns: Vec<Column>) -> Result<Self> {
        let height = columns.first().map_or(0, Column::len);
        for (i, c) in columns.iter().enumerate() {
            if c.len() != height {
                return Err(Error::Table(format!(
                    "column `{}` has {} rows, column `{}` {height}",
                    c.name,
                    c.len(),
                    columns[0].name
                )));
            }
            if columns[..i].iter().any(|d| d.name == c.name) {
                return Err(Error::Table(format!("column `{}` appears twice", c.name)));
            }
        }
        Ok(Table {
            columns,
            height,
            unread: Vec::new(),
        })
    }

    /// Number of rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The column names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The column called `name`, or an error naming it (and why it was not read, for a Parquet column of a type
    /// genir does not read).
    pub fn column(&self, name: &str) -> Result<&Column> {
        if let Some(c) = self.columns.iter().find(|c| c.name == name) {
            return Ok(c);
        }
        if let Some((_, why)) = self.unread.iter().find(|(n, _)| n == name) {
            return Err(Error::Table(format!("column `{name}` was not read: {why}")));
        }
        Err(Error::Table(format!(
            "no column `{name}` (columns: {})",
            self.names().join(", ")
        )))
    }

    /// Whether a column called `name` exists.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name)
    }

    /// A column as `f64` (see [`Column::f64s`]).
    pub fn f64s(&self, name: &str) -> Result<Vec<f64>> {
        self.column(name)?.f64s()
    }

    /// A column as `i64` (see [`Column::i64s`]).
    pub fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        self.column(name)?.i64s()
    }

    /// A column as strings (see [`Column::strs`]).
    pub fn strs(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.column(name)?.strs())
    }

    /// The rows of `self` followed by those of `other`, which must have the same column names and types.
    pub fn vstack(&self, other: &Table) -> Result<Table> {
        if self.names() != other.names() {
            return Err(Error::Table(format!(
                "cannot stack tables with columns ({}) and ({})",
                self.names().join(", "),
                other.names().join(", ")
            )));
        }
        let mut columns = Vec::with_capacity(self.width());
        for (a, b) in self.columns.iter().zip(&other.columns) {
            let values = match (&a.values, &b.values) {
                (Values::Str(x), Values::Str(y)) => Values::Str([x.clone(), y.clone()].concat()),
                (Values::F64(x), Values::F64(y)) => Values::F64([x.clone(), y.clone()].concat()),
                (Values::F32(x), Values::F32(y)) => Values::F32([x.clone(), y.clone()].concat()),
                (Values::I64(x), Values::I64(y)) => Values::I64([x.clone(), y.clone()].concat()),
                (Values::I32(x), Values::I32(y)) => Values::I32([x.clone(), y.clone()].concat()),
                (Values::U32(x), Values::U32(y)) => Values::U32([x.clone(), y.clone()].concat()),
                (Values::Bool(x), Values::Bool(y)) => Values::Bool([x.clone(), y.clone()].concat()),
                (x, y) => {
                    return Err(Error::Table(format!(
                        "cannot stack column `{}`: {} and {}",
                        a.name,
                        x.type_name(),
                        y.type_name()
                    )))
                }
            };
            let valid = match (&a.valid, &b.valid) {
                (None, None) => None,
                _ => Some(
                    (0..a.len())
                        .map(|i| !a.is_null(i))
                        .chain((0..b.len()).map(|i| !b.is_null(i)))
                        .collect(),
                ),
            };
            columns.push(Column {
                name: a.name.clone(),
                values,
                valid,
            });
        }
        Table::new(columns)
    }

    /// Writes the table as CSV to `out`: a header row, RFC 4180 quoting (fields with a comma, quote, line break or
    /// leading/trailing space are quoted), floats by `{}` with NaN as `NaN`, nulls as empty fields.
    pub fn write_csv_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let header: Vec<String> = self.columns.iter().map(|c| csv_quote(&c.name)).collect();
        writeln!(out, "{}", header.join(","))?;
        let mut line = String::new();
        for i in 0..self.height {
            line.clear();
            for (j, c) in self.columns.iter().enumerate() {
                if j > 0 {
                    line.push(',');
                }
                line.push_str(&csv_quote(&c.text(i)));
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    /// The table as CSV text (see [`Table::write_csv_to`]).
    pub fn to_csv(&self) -> String {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and every cell is valid UTF-8.
        let _ = self.write_csv_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes the table as CSV to `path` atomically (creating parent folders), row by row.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        genir_io::write_atomic_with(path, |w| {
            self.write_csv_to(w).map_err(|e| Error::io(path, e))
        })
    }
}

/// An aligned text rendering: the shape, the header, and the first and last 10 rows of a longer table (cells
/// longer than 40 characters are cut with `…`).
impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<usize> = if self.height <= 20 {
            (0..self.height).collect()
        } else {
            (0..10).chain(self.height - 10..self.height).collect()
        };
        let cell = |c: &Column, i: usize| -> String {
            let t = c.text(i);
            if t.chars().count() > 40 {
                t.chars().take(39).chain(['…']).collect()
            } else {
                t
            }
        };
        let cells: Vec<Vec<String>> = self
            .columns
            .iter()
            .map(|c| {
                std::iter::once(c.name.clone())
                    .chain(rows.iter().map(|&i| cell(c, i)))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = cells
            .iter()
            .map(|c| c.iter().map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        writeln!(f, "table: {} rows x {} columns", self.height, self.width())?;
        for r in 0..=rows.len() {
            if r == 11 && self.height > 20 {
                writeln!(f, "…")?;
            }
            let line: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, &w)| format!("{:<w$}", c[r]))
                .collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(feature = "parquet")]
mod pq {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use parquet::basic::{
        Compression, IntType, LogicalType, Repetition, Type as Physical, ZstdLevel,
    };
    use parquet::column::reader::ColumnReader;
    use parquet::column::writer::ColumnWriter;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::{ColumnDescriptor, Type};

    use super::{Column, Table, Values};
    use crate::error::{Error, Result};

    fn pe(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
        move |source| Error::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }

    fn field(c: &Column) -> Result<Type> {
        let (physical, logical) = match c.values() {
            Values::Str(_) => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            Values::F64(_) => (Physical::DOUBLE, None),
            Values::F32(_) => (Physical::FLOAT, None),
            Values::I64(_) => (Physical::INT64, None),
            Values::I32(_) => (Physical::INT32, None),
            Values::U32(_) => (
                Physical::INT32,
                Some(LogicalType::Integer(IntType {
                    bit_width: 32,
                    is_signed: false,
                })),
            ),
            Values::Bool(_) => (Physical::BOOLEAN, None),
        };
        let repetition = if c.valid.is_some() {
            Repetition::OPTIONAL
        } else {
            Repetition::REQUIRED
        };
        Type::primitive_type_builder(c.name(), physical)
            .with_repetition(repetition)
            .with_logical_type(logical)
            .build()
            .map_err(|e| Error::Table(format!("column `{}`: {e}", c.name())))
    }

    /// Present values only (Parquet stores nulls as definition levels, not values).
    fn present<T: Clone>(c: &Column, v: &[T]) -> Vec<T> {
        match &c.valid {
            None => v.to_vec(),
            Some(valid) => v
                .iter()
                .zip(valid)
                .filter(|(_, &ok)| ok)
                .map(|(x, _)| x.clone())
                .collect(),
        }
    }

    impl Table {
        /// Writes the table as Parquet to `path`, atomically (temporary file, then rename).
        pub fn write_parquet(&self, path: &Path) -> Result<()> {
            let fields = self
                .columns
                .iter()
                .map(|c| field(c).map(Arc::new))
                .collect::<Result<Vec<_>>>()?;
            let schema = Arc::new(
                Type::group_type_builder("schema")
                    .with_fields(fields)
                    .build()
                    .map_err(pe(path))?,
            );
            let props = Arc::new(
                WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_created_by(format!("genir {}", env!("CARGO_PKG_VERSION")))
                    .build(),
            );
            genir_io::write_atomic_with(path, |out| {
                let mut writer = SerializedFileWriter::new(out, schema, props).map_err(pe(path))?;
                let mut rg = writer.next_row_group().map_err(pe(path))?;
                for c in &self.columns {
                    let Some(mut cw) = rg.next_column().map_err(pe(path))? else {
                        return Err(Error::Table("parquet writer ran out of columns".into()));
                    };
                    let defs: Option<Vec<i16>> = c
                        .valid
                        .as_ref()
                        .map(|v| v.iter().map(|&ok| i16::from(ok)).collect());
                    let defs = defs.as_deref();
                    match (cw.untyped(), c.values()) {
                        (ColumnWriter::ByteArrayColumnWriter(w), Values::Str(v)) => {
                            let bytes: Vec<ByteArray> =
                                present(c, v).iter().map(|s| s.as_str().into()).collect();
                            w.write_batch(&bytes, defs, None)
                        }
                        (ColumnWriter::DoubleColumnWriter(w), Values::F64(v)) => {
                            w.write_batch(&present(c, v), defs, None)
                        }
                        (ColumnWriter::FloatColumnWriter(w), Values::F32(v)) => {
                            w.write_batch(&present(c, v), defs, None)
                        }
                        (ColumnWriter::Int64ColumnWriter(w), Values::I64(v)) => {
                            w.write_batch(&present(c, v), defs, None)
                        }
                        (ColumnWriter::Int32ColumnWriter(w), Values::I32(v)) => {
                            w.write_batch(&present(c, v), defs, None)
                        }
                        (ColumnWriter::Int32ColumnWriter(w), Values::U32(v)) => {
                            // Unsigned 32-bit values are stored bit for bit in INT32 (the UINT_32 annotation).
                            let bits: Vec<i32> = present(c, v).iter().map(|&x| x as i32).collect();
                            w.write_batch(&bits, defs, None)
                        }
                        (ColumnWriter::BoolColumnWriter(w), Values::Bool(v)) => {
                            w.write_batch(&present(c, v), defs, None)
                        }
                        _ => {
                            return Err(Error::Table(format!(
                                "column `{}`: writer type does not match",
                                c.name()
                            )))
                        }
                    }
                    .map_err(pe(path))?;
                    cw.close().map_err(pe(path))?;
                }
                rg.close().map_err(pe(path))?;
                writer.close().map_err(pe(path))?;
                Ok(())
            })
        }

        /// Reads a whole Parquet file. Columns of types genir does not read (nested, decimal, timestamp, ...)
        /// are skipped; [`Table::column`] names the reason when one is asked for.
        pub fn read_parquet(path: &Path) -> Result<Table> {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let reader = SerializedFileReader::new(file).map_err(pe(path))?;
            let meta = reader.metadata();
            let schema = meta.file_metadata().schema_descr();
            let root = schema.root_schema();
            let mut unread = Vec::new();
            // Top-level primitive columns map one to one to leaf columns; group fields are skipped.
            let mut leaves: Vec<(usize, Arc<ColumnDescriptor>)> = Vec::new();
            let mut leaf = 0;
            for f in root.get_fields() {
                if f.is_primitive() {
                    leaves.push((leaf, schema.column(leaf)));
                    leaf += 1;
                } else {
                    let n = count_leaves(f);
                    unread.push((
                        f.name().to_string(),
                        "a nested (group or list) column".to_string(),
                    ));
                    leaf += n;
                }
            }
            let mut columns: Vec<Option<Partial>> = leaves
                .iter()
                .map(|(_, d)| match kind(d) {
                    Ok(k) => Some(Partial::new(k)),
                    Err(why) => {
                        unread.push((d.name().to_string(), why));
                        None
                    }
                })
                .collect();
            for g in 0..meta.num_row_groups() {
                let rg = reader.get_row_group(g).map_err(pe(path))?;
                for ((i, desc), slot) in leaves.iter().zip(columns.iter_mut()) {
                    let Some(part) = slot else { continue };
                    let cr = rg.get_column_reader(*i).map_err(pe(path))?;
                    if let Some(why) = part.read(cr, desc, path)? {
                        unread.push((desc.name().to_string(), why));
                        *slot = None;
                    }
                }
            }
            let mut out = Vec::new();
            for ((_, desc), slot) in leaves.iter().zip(columns) {
                if let Some(part) = slot {
                    out.push(part.finish(desc.name(), path)?);
                }
            }
            let mut t =
                Table::new(out).map_err(|e| Error::parse(path, 0, "columns", e.to_string()))?;
            t.unread = unread;
            Ok(t)
        }
    }

    fn count_leaves(t: &Type) -> usize {
        if t.is_primitive() {
            1
        } else {
            t.get_fields().iter().map(|f| count_leaves(f)).sum()
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        /// UTF-8 strings (annotated `STRING`, `JSON` or `ENUM`).
        Str,
        /// Unannotated `BYTE_ARRAY`: read as strings when every value is UTF-8, else left unread.
        Bytes,
        F64,
        F32,
        I64,
        U64,
        I32,
        U32,
        Bool,
    }

    /// How a leaf column is read, or why it is not. Older writers (parquet-mr before 1.11: Spark 2, Hive,
    /// Impala) record only the converted type, so both annotations are checked: a `DATE`, `DECIMAL`, `TIME_*` or
    /// `TIMESTAMP_*` integer must not be read as a plain number.
    fn kind(d: &ColumnDescriptor) -> std::result::Result<Kind, String> {
        use parquet::basic::ConvertedType as C;
        if d.max_rep_level() > 0 {
            return Err("a repeated column".into());
        }
        let logical = d.logical_type_ref();
        let converted = d.converted_type();
        let unsigned = matches!(
            logical,
            Some(LogicalType::Integer(IntType {
                is_signed: false,
                ..
            }))
        ) || matches!(converted, C::UINT_8 | C::UINT_16 | C::UINT_32 | C::UINT_64);
        let plain_int = matches!(logical, None | Some(LogicalType::Integer(_)))
            && matches!(
                converted,
                C::NONE
                    | C::INT_8
                    | C::INT_16
                    | C::INT_32
                    | C::INT_64
                    | C::UINT_8
                    | C::UINT_16
                    | C::UINT_32
                    | C::UINT_64
            );
        let described = || match (logical, converted) {
            (Some(l), _) => format!(" of logical type {l:?}"),
            (None, C::NONE) => String::new(),
            (None, c) => format!(" of converted type {c}"),
        };
        match d.physical_type() {
            Physical::BYTE_ARRAY => match (logical, converted) {
                (Some(LogicalType::String | LogicalType::Json | LogicalType::Enum), _)
                | (None, C::UTF8 | C::JSON | C::ENUM) => Ok(Kind::Str),
                (None, C::NONE) => Ok(Kind::Bytes),
                _ => Err(format!("a BYTE_ARRAY column{}", described())),
            },
            Physical::DOUBLE => Ok(Kind::F64),
            Physical::FLOAT => Ok(Kind::F32),
            Physical::BOOLEAN => Ok(Kind::Bool),
            Physical::INT32 if plain_int => Ok(if unsigned { Kind::U32 } else { Kind::I32 }),
            Physical::INT64 if plain_int => Ok(if unsigned { Kind::U64 } else { Kind::I64 }),
            p => Err(format!("a {p} column{}", described())),
        }
    }

    /// A column being read, row group by row group.
    struct Partial {
        kind: Kind,
        values: Values,
        valid: Vec<bool>,
    }

    const BATCH: usize = 8192;

    impl Partial {
        fn new(kind: Kind) -> Self {
            let values = match kind {
                Kind::Str | Kind::Bytes => Values::Str(Vec::new()),
                Kind::F64 => Values::F64(Vec::new()),
                Kind::F32 => Values::F32(Vec::new()),
                Kind::I64 | Kind::U64 => Values::I64(Vec::new()),
                Kind::I32 => Values::I32(Vec::new()),
                Kind::U32 => Values::U32(Vec::new()),
                Kind::Bool => Values::Bool(Vec::new()),
            };
            Partial {
                kind,
                values,
                valid: Vec::new(),
            }
        }

        /// Reads one column chunk; `Ok(Some(reason))` when the column turns out not to be readable (binary
        /// values that are not UTF-8 in an unannotated column).
        fn read(
            &mut self,
            cr: ColumnReader,
            desc: &ColumnDescriptor,
            path: &Path,
        ) -> Result<Option<String>> {
            let name = desc.name();
            let max_def = desc.max_def_level();
            let bad = |msg: String| Error::parse(path, 0, name, msg);
            // Reads all records of this chunk: the present values and, for nullable columns, the levels.
            macro_rules! drain {
                ($r:expr, $t:ty) => {{
                    let mut vals: Vec<$t> = Vec::new();
                    let mut defs: Vec<i16> = Vec::new();
                    loop {
                        let (records, _, _) = $r
                            .read_records(
                                BATCH,
                                if max_def > 0 { Some(&mut defs) } else { None },
                                None,
                                &mut vals,
                            )
                            .map_err(pe(path))?;
                        if records == 0 {
                            break;
                        }
                    }
                    (vals, defs)
                }};
            }
            let kind = self.kind;
            let rows = match (cr, &mut self.values) {
                (ColumnReader::ByteArrayColumnReader(mut r), Values::Str(out)) => {
                    let (vals, defs) = drain!(r, ByteArray);
                    let mut strs = Vec::with_capacity(vals.len());
                    for b in &vals {
                        match std::str::from_utf8(b.data()) {
                            Ok(t) => strs.push(t.to_string()),
                            Err(_) if kind == Kind::Bytes => {
                                return Ok(Some("a binary column (values are not UTF-8)".into()))
                            }
                            Err(e) => return Err(bad(format!("not UTF-8: {e}"))),
                        }
                    }
                    spread(out, strs, &defs, max_def, String::new()).map_err(bad)?;
                    defs
                }
                (ColumnReader::DoubleColumnReader(mut r), Values::F64(out)) => {
                    let (vals, defs) = drain!(r, f64);
                    spread(out, vals, &defs, max_def, f64::NAN).map_err(bad)?;
                    defs
                }
                (ColumnReader::FloatColumnReader(mut r), Values::F32(out)) => {
                    let (vals, defs) = drain!(r, f32);
                    spread(out, vals, &defs, max_def, f32::NAN).map_err(bad)?;
                    defs
                }
                (ColumnReader::Int64ColumnReader(mut r), Values::I64(out)) => {
                    let (vals, defs) = drain!(r, i64);
                    if kind == Kind::U64 {
                        if let Some(x) = vals.iter().find(|&&x| x < 0) {
                            return Err(bad(format!(
                                "unsigned value {} does not fit in i64",
                                *x as u64
                            )));
                        }
                    }
                    spread(out, vals, &defs, max_def, 0).map_err(bad)?;
                    defs
                }
                (ColumnReader::Int32ColumnReader(mut r), Values::I32(out)) => {
                    let (vals, defs) = drain!(r, i32);
                    spread(out, vals, &defs, max_def, 0).map_err(bad)?;
                    defs
                }
                (ColumnReader::Int32ColumnReader(mut r), Values::U32(out)) => {
                    let (vals, defs) = drain!(r, i32);
                    let vals = vals.into_iter().map(|x| x as u32).collect();
                    spread(out, vals, &defs, max_def, 0).map_err(bad)?;
                    defs
                }
                (ColumnReader::BoolColumnReader(mut r), Values::Bool(out)) => {
                    let (vals, defs) = drain!(r, bool);
                    spread(out, vals, &defs, max_def, false).map_err(bad)?;
                    defs
                }
                _ => return Err(bad("column type changed between row groups".into())),
            };
            if max_def > 0 {
                self.valid.extend(rows.iter().map(|&d| d == max_def));
            } else {
                let n = self.values.len() - self.valid.len();
                self.valid.extend(std::iter::repeat_n(true, n));
            }
            Ok(None)
        }

        fn finish(self, name: &str, path: &Path) -> Result<Column> {
            Column::new(name, self.values)
                .with_validity(self.valid)
                .map_err(|e| Error::parse(path, 0, name, e.to_string()))
        }
    }

    /// Appends one row per definition level (a placeholder at nulls), or the values as they are for a
    /// required column; an error when the levels and the values disagree (a corrupt chunk).
    fn spread<T: Clone>(
        out: &mut Vec<T>,
        vals: Vec<T>,
        defs: &[i16],
        max_def: i16,
        null: T,
    ) -> std::result::Result<(), String> {
        if max_def == 0 {
            out.extend(vals);
            return Ok(());
        }
        let present = defs.iter().filter(|&&d| d == max_def).count();
        if present != vals.len() {
            return Err(format!(
                "{} values for {present} non-null definition levels",
                vals.len()
            ));
        }
        let mut it = vals.into_iter();
        for &d in defs {
            match (d == max_def).then(|| it.next()).flatten() {
                Some(v) => out.push(v),
                None => out.push(null.clone()),
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use std::sync::Arc;

        use parquet::basic::{ConvertedType, Repetition, Type as Physical};
        use parquet::schema::types::{ColumnDescriptor, ColumnPath, Type};

        use super::{kind, Kind};

        fn desc(physical: Physical, converted: ConvertedType, rep: i16) -> ColumnDescriptor {
            let mut b = Type::primitive_type_builder("c", physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_converted_type(converted);
            if converted == ConvertedType::DECIMAL {
                b = b.with_precision(9).with_scale(2);
            }
            let t = b.build().unwrap();
            ColumnDescriptor::new(Arc::new(t), 1, rep, ColumnPath::new(vec!["c".into()]))
        }

        #[test]
        fn converted_types_alone_decide_what_is_read() {
            use ConvertedType as C;
            // Annotations only in the old converted-type field (no logical type), as parquet-mr < 1.11 writes.
            for c in [C::DATE, C::DECIMAL, C::TIME_MILLIS] {
                let e = kind(&desc(Physical::INT32, c, 0)).err().unwrap();
                assert!(e.contains(&c.to_string()), "{e}");
            }
            for c in [C::TIMESTAMP_MILLIS, C::TIMESTAMP_MICROS] {
                assert!(kind(&desc(Physical::INT64, c, 0)).is_err());
            }
            assert!(kind(&desc(Physical::INT32, C::UINT_32, 0)) == Ok(Kind::U32));
            assert!(kind(&desc(Physical::INT32, C::INT_16, 0)) == Ok(Kind::I32));
            assert!(kind(&desc(Physical::INT64, C::NONE, 0)) == Ok(Kind::I64));
            assert!(kind(&desc(Physical::BYTE_ARRAY, C::UTF8, 0)) == Ok(Kind::Str));
            assert!(kind(&desc(Physical::BYTE_ARRAY, C::NONE, 0)) == Ok(Kind::Bytes));
            assert!(kind(&desc(Physical::BYTE_ARRAY, C::BSON, 0)).is_err());
            let e = kind(&desc(Physical::INT32, C::NONE, 1)).err().unwrap();
            assert!(e.contains("repeated"), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table::new(vec![
            Column::new("s", vec!["a", "b,c", " d"]),
            Column::new("x", vec![1.5, f64::NAN, -2.0]),
            Column::new("i", vec![1i64, -2, 3]),
            Column::new("j", vec![7i32, 8, 9]),
            Column::new("u", vec![1u32, u32::MAX, 0]),
            Column::new("b", vec![true, false, true]),
        ])
        .unwrap()
    }

    #[test]
    fn columns_convert_and_errors_name_the_column() {
        let t = sample();
        assert_eq!(t.height(), 3);
        assert_eq!(t.names(), ["s", "x", "i", "j", "u", "b"]);
        assert_eq!(t.i64s("u").unwrap(), [1, i64::from(u32::MAX), 0]);
        assert_eq!(t.f64s("i").unwrap(), [1.0, -2.0, 3.0]);
        assert_eq!(t.strs("x").unwrap(), ["1.5", "NaN", "-2"]);
        let e = t.f64s("s").unwrap_err().to_string();
        assert!(e.contains("`s`") && e.contains("string"), "{e}");
        let e = t.column("nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("s, x, i"), "{e}");
        let e = Table::new(vec![
            Column::new("a", vec![1i64]),
            Column::new("b", vec![1i64, 2]),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("`b` has 2 rows"), "{e}");
        assert!(Table::new(vec![
            Column::new("a", vec![1i64]),
            Column::new("a", vec![2i64])
        ])
        .is_err());
        let shown = t.to_string();
        assert!(
            shown.starts_with("table: 3 rows x 6 columns\ns "),
            "{shown}"
        );
        let long = Table::new(vec![Column::new("i", (0..25i64).collect::<Vec<_>>())]).unwrap();
        let shown = long.to_string();
        assert_eq!(shown.lines().count(), 2 + 20 + 1, "{shown}");
        assert!(shown.contains("\n9\n…\n15\n"), "{shown}");
        let two = t.vstack(&t).unwrap();
        assert_eq!((two.height(), two.strs("s").unwrap()[3].as_str()), (6, "a"));
        assert!(t
            .vstack(&Table::new(vec![Column::new("s", vec!["x"])]).unwrap())
            .is_err());
        let f = Table::new(vec![Column::new("f", vec![2.0, 2.5])]).unwrap();
        assert!(f.i64s("f").unwrap_err().to_string().contains("2.5"));
    }

    #[test]
    fn csv_quotes_and_writes_nulls_empty() {
        let t = Table::new(vec![
            Column::new("s", vec!["a", "b,\"c\"", " d"]),
            Column::new("x", vec![1.5, f64::NAN, -2.0])
                .with_validity(vec![true, true, false])
                .unwrap(),
        ])
        .unwrap();
        let o = Column::from_options("o", vec![Some(2u32), None]);
        assert_eq!(
            (o.is_null(0), o.is_null(1), o.strs()),
            (false, true, vec!["2".to_string(), String::new()])
        );
        assert_eq!(t.to_csv(), "s,x\na,1.5\n\"b,\"\"c\"\"\",NaN\n\" d\",\n");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/t.csv");
        t.write_csv(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), t.to_csv());
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn parquet_round_trips_every_type_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let t = sample();
        t.write_parquet(&p).unwrap();
        let back = Table::read_parquet(&p).unwrap();
        assert_eq!(back.names(), t.names());
        assert_eq!(back.strs("s").unwrap(), t.strs("s").unwrap());
        assert_eq!(
            back.column("u").unwrap().values(),
            t.column("u").unwrap().values()
        );
        assert_eq!(
            back.column("j").unwrap().values(),
            t.column("j").unwrap().values()
        );
        assert_eq!(
            back.column("b").unwrap().values(),
            t.column("b").unwrap().values()
        );
        let x = back.f64s("x").unwrap();
        assert_eq!((x[0], x[2]), (1.5, -2.0));
        assert!(x[1].is_nan());

        // f32 stays f32; a table with nulls and NaN round-trips equal (placeholders at nulls not compared).
        let f = Table::new(vec![
            Column::new("f", vec![0.1f32, f32::NAN, 2.0]),
            Column::from_options("o", vec![Some(1.5f64), None, Some(f64::NAN)]),
        ])
        .unwrap();
        f.write_parquet(&p).unwrap();
        let back = Table::read_parquet(&p).unwrap();
        assert_eq!(back, f);
        assert!(matches!(back.column("f").unwrap().values(), Values::F32(_)));
        assert_eq!(back.strs("f").unwrap(), ["0.1", "NaN", "2"]);

        let n = Table::new(vec![
            Column::new("s", vec!["a", "", "c"])
                .with_validity(vec![true, false, true])
                .unwrap(),
            Column::new("i", vec![1i64, 0, 3])
                .with_validity(vec![false, true, true])
                .unwrap(),
        ])
        .unwrap();
        n.write_parquet(&p).unwrap();
        let back = Table::read_parquet(&p).unwrap();
        let s = back.column("s").unwrap();
        assert_eq!(s.opt_strs().unwrap(), [Some("a"), None, Some("c")]);
        assert_eq!(back.i64s("i").unwrap(), [-1, 0, 3]);
        assert_eq!(back.column("i").unwrap().null_count(), 1);
        assert_eq!(back, n);
        assert_ne!(back, f);

        // A corrupt file is an error naming it, not a panic.
        std::fs::write(&p, b"PAR1 not really").unwrap();
        let e = Table::read_parquet(&p).unwrap_err().to_string();
        assert!(e.contains("t.parquet"), "{e}");
    }
}
