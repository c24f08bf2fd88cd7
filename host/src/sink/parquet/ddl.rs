//! The Athena (Hive) DDL of a sink's table, what Glue's crawler would have made.

use super::config::ParquetSinkSpec;

/// `CREATE EXTERNAL TABLE` for the files the sink writes. Data columns are the
/// declared columns minus the partition columns (Athena takes those from the
/// directory names and rejects a column declared in both places).
pub fn athena_ddl(spec: &ParquetSinkSpec, table: &str, location: &str) -> String {
    let cols = spec.columns();
    let col = |c: &super::config::ColumnSpec| format!("  `{}` {}", c.name, c.ty.hive());
    let data: Vec<String> = cols.iter().filter(|c| !spec.partition_by.contains(&c.name)).map(col).collect();
    let parts: Vec<String> =
        spec.partition_by.iter().filter_map(|p| cols.iter().find(|c| &c.name == p)).map(col).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_lists_data_and_partition_columns() {
        let spec: ParquetSinkSpec = toml::from_str("inputs = [\"e\"]\npath = \"out\"").unwrap();
        let ddl = athena_ddl(&spec, "nyctaxitrips", "s3://lake/trips");
        assert!(ddl.starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS `nyctaxitrips` (\n  `id` string,\n"), "{ddl}");
        assert!(ddl.contains("  `pickupDate` timestamp,\n"), "{ddl}");
        assert!(ddl.contains("  `tripDuration` bigint,\n"), "{ddl}");
        assert!(ddl.contains(
            "PARTITIONED BY (\n  `year` int,\n  `month` int,\n  `day` int,\n  `hour` int,\n  `vendorId` int\n)"
        ), "{ddl}");
        assert!(!ddl[..ddl.find("PARTITIONED").unwrap()].contains("`hour`"), "{ddl}");
        assert!(ddl.ends_with(
            "STORED AS PARQUET\nLOCATION 's3://lake/trips/'\nTBLPROPERTIES ('parquet.compression'='SNAPPY')"
        ), "{ddl}");
    }
}
