//! `lake`: clicks as Parquet by `event_date`/`event_hour`, exactly once.

use super::*;

/// Raw click events into the lake's `ecommerce_events` table, partitioned
/// by `event_date` / `event_hour`, exactly once (run it with
/// `exactly_once_v2`).
pub fn lake(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let lake = Arc::new(
        Lake::open(&cfg.lake_url)
            .with_context(|| format!("opening the lake at {}", cfg.lake_url))?,
    );
    let schema = arrow_schema(
        &apache_avro::Schema::parse_str(UserEventV2::SCHEMA).context("the v2 schema")?,
    )
    .context("the v2 schema as Arrow")?;
    let clicks = cfg.clicks(&b);
    to_lake(
        &b,
        &clicks,
        lake,
        Arc::new(schema),
        LakeSinkConfig::new("ecommerce_events"),
    );
    Ok(b.build()?)
}
