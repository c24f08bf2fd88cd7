//! The Athena (Hive) DDL of a sink's table, what Glue's crawler would have made.

use arrow::datatypes::{DataType, Schema};

use super::config::ParquetSinkSpec;

/// `CREATE EXTERNAL TABLE` for the files the sink writes, from the table's
/// schema (declared, or fixed from the data). Data columns are the schema's
/// columns minus the partition columns (Athena takes those from the directory
/// names and rejects a column declared in both places).
pub fn athena_ddl(spec: &ParquetSinkSpec, schema: &Schema, table: &str, location: &str) -> String {
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
    ddl.push_str(&format!(
        "STORED AS PARQUET\nLOCATION '{location}'\nTBLPROPERTIES ('parquet.compression'='{}')",
        spec.compression.table_property()
    ));
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
    }
}
