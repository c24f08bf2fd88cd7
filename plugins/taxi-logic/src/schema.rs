//! The Arrow schemas of the records `validate` and `enrich` emit (the Glue
//! table `nyctaxitrips`, camelCase). The host's JSON→Arrow conversion and the
//! Parquet sink should use these rather than spell the schema again.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const TIMEZONE: &str = "UTC";

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(TIMEZONE.into()))
}

/// The 14 input fields, typed. gcDistance and tripDuration stay nullable: `enrich` fills them.
fn base_fields(enriched: bool) -> Vec<Field> {
    vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("vendorId", DataType::Int32, false),
        Field::new("pickupDate", timestamp_type(), false),
        Field::new("dropoffDate", timestamp_type(), false),
        Field::new("passengerCount", DataType::Int32, false),
        Field::new("pickupLongitude", DataType::Float64, false),
        Field::new("pickupLatitude", DataType::Float64, false),
        Field::new("dropoffLongitude", DataType::Float64, false),
        Field::new("dropoffLatitude", DataType::Float64, false),
        Field::new("storeAndFwdFlag", DataType::Utf8, true),
        Field::new("gcDistance", DataType::Float64, !enriched),
        Field::new("tripDuration", DataType::Int64, !enriched),
        Field::new("googleDistance", DataType::Float64, true),
        Field::new("googleDuration", DataType::Int64, true),
    ]
}

/// What `validate` emits.
pub fn validated() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| Arc::new(Schema::new(base_fields(false)))).clone()
}

/// What `enrich` emits: the validated fields plus `source` and the partition
/// fields year, month, day, hour (of pickupDate, UTC).
pub fn enriched() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut f = base_fields(true);
        f.push(Field::new("source", DataType::Utf8, false));
        for p in ["year", "month", "day", "hour"] {
            f.push(Field::new(p, DataType::Int32, false));
        }
        Arc::new(Schema::new(f))
    })
    .clone()
}
