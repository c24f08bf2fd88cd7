//! The Athena (Hive) DDL of a sink's table, what Glue's crawler would have made.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Schema};

use super::config::ParquetSinkSpec;

/// `CREATE EXTERNAL TABLE` for the files the sink writes, from the table's
/// schema (declared, or fixed from the data). Data columns are the schema's
/// columns minus the partition columns (Athena takes those from the directory
/// names and rejects a column declared in both places).
/// Partition projection (Athena computes partitions from these properties,
/// so no `MSCK REPAIR TABLE` or crawler is needed).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Values seen per partition column (from listing a local table); a
    /// column without any is `injected` (queries must filter on it).
    pub seen: BTreeMap<String, Vec<String>>,
}

/// Columns whose partition values are written with two digits (see
/// `partition.rs`), with their calendar range.
const CALENDAR: [(&str, &str); 3] = [("month", "1,12"), ("day", "1,31"), ("hour", "0,23")];

impl Projection {
    fn properties(&self, spec: &ParquetSinkSpec, schema: &Schema, location: &str) -> Vec<(String, String)> {
        let mut props = vec![("projection.enabled".to_owned(), "true".to_owned())];
        let mut template = location.trim_end_matches('/').to_owned();
        for p in &spec.partition_by {
            let Ok(field) = schema.field_with_name(p) else { continue };
            let integer = matches!(field.data_type(), DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64);
            let key = |k: &str| format!("projection.{p}.{k}");
            let seen = self.seen.get(p).filter(|v| !v.is_empty());
            if let (true, Some((_, range))) = (integer, CALENDAR.iter().find(|(c, _)| c == p)) {
                props.push((key("type"), "integer".into()));
                props.push((key("range"), (*range).into()));
                props.push((key("digits"), "2".into()));
            } else if let (true, Some(vals)) = (integer, seen) {
                let nums: Vec<i64> = vals.iter().filter_map(|v| v.parse().ok()).collect();
                let (lo, hi) = (nums.iter().min().copied().unwrap_or(0), nums.iter().max().copied().unwrap_or(0));
                props.push((key("type"), "integer".into()));
                props.push((key("range"), format!("{lo},{hi}")));
            } else if let Some(vals) = seen.filter(|v| v.len() <= 1000) {
                props.push((key("type"), "enum".into()));
                props.push((key("values"), vals.join(",")));
            } else {
                props.push((key("type"), "injected".into()));
            }
            template.push_str(&format!("/{p}=${{{p}}}"));
        }
        props.push(("storage.location.template".into(), format!("{template}/")));
        props
    }
}

pub fn athena_ddl(spec: &ParquetSinkSpec, schema: &Schema, table: &str, location: &str) -> String {
    athena_ddl_with(spec, schema, table, location, None)
}

/// [`athena_ddl`], with partition projection properties when asked.
pub fn athena_ddl_with(spec: &ParquetSinkSpec, schema: &Schema, table: &str, location: &str, projection: Option<&Projection>) -> String {
    let col = |name: &str, ty: &DataType| format!("  `{name}` {}", hive_type(ty));
    let data: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !spec.partition_by.contains(f.name()))
        .map(|f| col(f.name(), f.data_type()))
        .collect();
    let parts: Vec<String> = spec
        .partition_by
        .iter()
        .filter_map(|p| schema.field_with_name(p).ok())
        .map(|f| col(f.name(), f.data_type()))
        .collect();
    let location = if location.ends_with('/') { location.to_owned() } else { format!("{location}/") };
    let mut ddl = format!("CREATE EXTERNAL TABLE IF NOT EXISTS `{table}` (\n{}\n)\n", data.join(",\n"));
    if !parts.is_empty() {
        ddl.push_str(&format!("PARTITIONED BY (\n{}\n)\n", parts.join(",\n")));
    }
    let mut props = vec![("parquet.compression".to_owned(), spec.compression.table_property().to_owned())];
    if let Some(p) = projection.filter(|_| !spec.partition_by.is_empty()) {
        props.extend(p.properties(spec, schema, &location));
    }
    let props: Vec<String> = props.iter().map(|(k, v)| format!("'{k}'='{}'", v.replace('\'', "''"))).collect();
    let props = if props.len() == 1 { format!("({})", props[0]) } else { format!("(\n  {}\n)", props.join(",\n  ")) };
    ddl.push_str(&format!("STORED AS PARQUET\nLOCATION '{location}'\nTBLPROPERTIES {props}"));
    ddl
}

/// The Hive type name of an Arrow type (nested types recursively).
pub fn hive_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "string".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "binary".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("array<{}>", hive_type(f.data_type()))
        }
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields.iter().map(|f| format!("{}:{}", f.name(), hive_type(f.data_type()))).collect::<Vec<_>>().join(",")
        ),
        DataType::Dictionary(_, v) => hive_type(v),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, TimeUnit};

    use super::*;

    #[test]
    fn ddl_lists_data_and_partition_columns() {
        let spec: ParquetSinkSpec =
            toml::from_str("inputs = [\"e\"]\npath = \"out\"\npartition_by = [\"station\", \"month\"]").unwrap();
        let schema = Schema::new(vec![
            Field::new("station", DataType::Utf8, true),
            Field::new("observed", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
            Field::new("temp_c", DataType::Float64, true),
            Field::new("month", DataType::Int32, true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]);
        let ddl = athena_ddl(&spec, &schema, "weather", "s3://lake/weather");
        assert!(ddl.starts_with(
            "CREATE EXTERNAL TABLE IF NOT EXISTS `weather` (\n  `observed` timestamp,\n  `temp_c` double,\n  `tags` array<string>\n)\n"
        ), "{ddl}");
        assert!(ddl.contains("PARTITIONED BY (\n  `station` string,\n  `month` int\n)"), "{ddl}");
        assert!(ddl.ends_with(
            "STORED AS PARQUET\nLOCATION 's3://lake/weather/'\nTBLPROPERTIES ('parquet.compression'='SNAPPY')"
        ), "{ddl}");

        let mut seen = BTreeMap::new();
        seen.insert("station".to_owned(), vec!["KJFK".to_owned(), "KLGA".to_owned()]);
        let ddl = athena_ddl_with(&spec, &schema, "weather", "s3://lake/weather", Some(&Projection { seen }));
        for p in [
            "'projection.enabled'='true'",
            "'projection.station.type'='enum'",
            "'projection.station.values'='KJFK,KLGA'",
            "'projection.month.type'='integer'",
            "'projection.month.range'='1,12'",
            "'projection.month.digits'='2'",
            "'storage.location.template'='s3://lake/weather/station=${station}/month=${month}/'",
        ] {
            assert!(ddl.contains(p), "{p} missing:\n{ddl}");
        }
        let ddl = athena_ddl_with(&spec, &schema, "weather", "s3://lake/weather", Some(&Projection::default()));
        assert!(ddl.contains("'projection.station.type'='injected'"), "{ddl}");
    }
}
