//! Cohort files: Apache Parquet, one row per patient, column `name` (UTF-8) and one `Float64`
//! column per field of [`PatientParams`] ([`PARAM_COLUMNS`]: `x0_1` … `x0_13` then the scalar
//! parameters under their Rust field names, units as documented on [`PatientParams`]).
//! Snappy compression, one row group per 65 536 patients.

use arrow::array::{Array, ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use medtwin_t1d::PatientParams;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Errors reading or writing a cohort file; every variant names the file.
#[derive(Debug, Error)]
pub enum CohortFileError {
    /// Filesystem error.
    #[error("{file}: {message}")]
    Io {
        /// The file.
        file: String,
        /// What failed.
        message: String,
    },
    /// Parquet / Arrow error.
    #[error("{file}: not a readable Parquet cohort: {message}")]
    Format {
        /// The file.
        file: String,
        /// Underlying error.
        message: String,
    },
    /// A required column is absent.
    #[error("{file}: missing column '{column}'")]
    MissingColumn {
        /// The file.
        file: String,
        /// The column.
        column: String,
    },
    /// A column has the wrong type or a null / non-finite value.
    #[error("{file}: column '{column}': {message}")]
    BadColumn {
        /// The file.
        file: String,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The file holds no patients.
    #[error("{file}: no patients")]
    Empty {
        /// The file.
        file: String,
    },
}

type Getter = fn(&PatientParams) -> f64;
type Setter = fn(&mut PatientParams, f64);

macro_rules! cols {
    ($( $name:literal => $($field:ident).+ $([$idx:literal])? ),* $(,)?) => {
        [ $( ($name,
              (|p: &PatientParams| p.$($field).+ $([$idx])?) as Getter,
              (|p: &mut PatientParams, v: f64| p.$($field).+ $([$idx])? = v) as Setter) ),* ]
    };
}

/// Every numeric column of a cohort file: `(column name, getter, setter)`, in file order.
pub const PARAM_COLUMNS: [(&str, Getter, Setter); 49] = cols![
    "x0_1" => x0[0], "x0_2" => x0[1], "x0_3" => x0[2], "x0_4" => x0[3], "x0_5" => x0[4],
    "x0_6" => x0[5], "x0_7" => x0[6], "x0_8" => x0[7], "x0_9" => x0[8], "x0_10" => x0[9],
    "x0_11" => x0[10], "x0_12" => x0[11], "x0_13" => x0[12],
    "bw" => bw, "ib" => ib, "kabs" => kabs, "kmax" => kmax, "kmin" => kmin, "b" => b, "d" => d,
    "vg" => vg, "vi" => vi, "vmx" => vmx, "km0" => km0, "k1" => k1, "k2" => k2, "p2u" => p2u,
    "m1" => m1, "m2" => m2, "m4" => m4, "m30" => m30, "ki" => ki, "kp1" => kp1, "kp2" => kp2,
    "kp3" => kp3, "f" => f, "ke1" => ke1, "ke2" => ke2, "fsnc" => fsnc, "vm0" => vm0,
    "kd" => kd, "ka1" => ka1, "ka2" => ka2, "ksc" => ksc, "u2ss" => u2ss,
    "cr_g_per_u" => cr_g_per_u, "cf_mg_dl_per_u" => cf_mg_dl_per_u, "age_years" => age_years,
    "tdi_u_per_day" => tdi_u_per_day,
];

const ROW_GROUP: usize = 65_536;

fn schema() -> Arc<Schema> {
    let mut fields = vec![Field::new("name", DataType::Utf8, false)];
    fields.extend(
        PARAM_COLUMNS
            .iter()
            .map(|(n, _, _)| Field::new(*n, DataType::Float64, false)),
    );
    Arc::new(Schema::new(fields))
}

/// Write `patients` to the Parquet file `path` (created or truncated). On error the partial
/// file is removed. Errors: [`CohortFileError::Io`] / [`CohortFileError::Format`].
pub fn write_cohort_parquet(
    path: &Path,
    patients: &[PatientParams],
) -> Result<(), CohortFileError> {
    let file = path.display().to_string();
    let r = write_inner(path, &file, patients);
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

fn write_inner(path: &Path, file: &str, patients: &[PatientParams]) -> Result<(), CohortFileError> {
    let fmt = |e: &dyn std::fmt::Display| CohortFileError::Format {
        file: file.to_string(),
        message: e.to_string(),
    };
    let f = File::create(path).map_err(|e| CohortFileError::Io {
        file: file.to_string(),
        message: format!("cannot create: {e}"),
    })?;
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let mut w = ArrowWriter::try_new(f, schema.clone(), Some(props)).map_err(|e| fmt(&e))?;
    for chunk in patients.chunks(ROW_GROUP) {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(
            chunk.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ))];
        for (_, get, _) in PARAM_COLUMNS.iter() {
            cols.push(Arc::new(Float64Array::from(
                chunk.iter().map(get).collect::<Vec<f64>>(),
            )));
        }
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| fmt(&e))?;
        w.write(&batch).map_err(|e| fmt(&e))?;
    }
    w.close().map_err(|e| fmt(&e))?;
    Ok(())
}

/// Read a cohort written by [`write_cohort_parquet`] (extra columns are ignored).
/// Errors name the file and, for a missing or malformed column, the column; non-finite values
/// and an empty file are rejected.
pub fn read_cohort_parquet(path: &Path) -> Result<Vec<PatientParams>, CohortFileError> {
    let file = path.display().to_string();
    let fmt = |e: &dyn std::fmt::Display| CohortFileError::Format {
        file: file.clone(),
        message: e.to_string(),
    };
    let f = File::open(path).map_err(|e| CohortFileError::Io {
        file: file.clone(),
        message: format!("cannot open: {e}"),
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| fmt(&e))?;
    let schema = builder.schema().clone();
    let mut needed = vec!["name"];
    needed.extend(PARAM_COLUMNS.iter().map(|(n, _, _)| *n));
    for c in &needed {
        if schema.field_with_name(c).is_err() {
            return Err(CohortFileError::MissingColumn {
                file: file.clone(),
                column: c.to_string(),
            });
        }
    }
    let reader = builder.build().map_err(|e| fmt(&e))?;
    let bad = |column: &str, message: String| CohortFileError::BadColumn {
        file: file.clone(),
        column: column.to_string(),
        message,
    };
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fmt(&e))?;
        let names = batch
            .column_by_name("name")
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| bad("name", "expected UTF-8 strings".into()))?;
        if names.null_count() > 0 {
            return Err(bad("name", "contains nulls".into()));
        }
        let base = out.len();
        for i in 0..batch.num_rows() {
            out.push(PatientParams {
                name: names.value(i).to_string(),
                ..template()
            });
        }
        for (col, _, set) in PARAM_COLUMNS.iter() {
            let a = batch
                .column_by_name(col)
                .and_then(|a| a.as_any().downcast_ref::<Float64Array>())
                .ok_or_else(|| bad(col, "expected Float64".into()))?;
            if a.null_count() > 0 {
                return Err(bad(col, "contains nulls".into()));
            }
            for i in 0..batch.num_rows() {
                let v = a.value(i);
                if !v.is_finite() {
                    return Err(bad(
                        col,
                        format!("row {}: non-finite value {v}", base + i + 1),
                    ));
                }
                set(&mut out[base + i], v);
            }
        }
    }
    if out.is_empty() {
        return Err(CohortFileError::Empty { file });
    }
    Ok(out)
}

fn template() -> PatientParams {
    PatientParams {
        name: String::new(),
        x0: [0.0; 13],
        bw: 0.0,
        ib: 0.0,
        kabs: 0.0,
        kmax: 0.0,
        kmin: 0.0,
        b: 0.0,
        d: 0.0,
        vg: 0.0,
        vi: 0.0,
        vmx: 0.0,
        km0: 0.0,
        k1: 0.0,
        k2: 0.0,
        p2u: 0.0,
        m1: 0.0,
        m2: 0.0,
        m4: 0.0,
        m30: 0.0,
        ki: 0.0,
        kp1: 0.0,
        kp2: 0.0,
        kp3: 0.0,
        f: 0.0,
        ke1: 0.0,
        ke2: 0.0,
        fsnc: 0.0,
        vm0: 0.0,
        kd: 0.0,
        ka1: 0.0,
        ka2: 0.0,
        ksc: 0.0,
        u2ss: 0.0,
        cr_g_per_u: 0.0,
        cf_mg_dl_per_u: 0.0,
        age_years: 0.0,
        tdi_u_per_day: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_missing_column_error() {
        let dir = std::env::temp_dir().join(format!("medtwin-cohort-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pts = medtwin_t1d::all_patients().unwrap();
        let path = dir.join("c.parquet");
        write_cohort_parquet(&path, &pts).unwrap();
        let back = read_cohort_parquet(&path).unwrap();
        assert_eq!(back, pts);
        // a file without 'kp1'
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["x"])) as ArrayRef],
        )
        .unwrap();
        let bad = dir.join("bad.parquet");
        let mut w = ArrowWriter::try_new(File::create(&bad).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let e = read_cohort_parquet(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad.parquet") && e.contains("missing column 'x0_1'"),
            "{e}"
        );
        let e = read_cohort_parquet(&dir.join("none.parquet"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.parquet"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
