//! `device-distribution`: events per device type in 10 min windows.

use super::*;

/// Events per device type in 10 min tumbling windows (v2 events only: v1
/// has no device).
pub fn device_distribution(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let table = cfg
        .clicks(&b)
        .flat_map(|_, e: UserEventV2| e.device_type.map(|d| (d.as_str().to_owned(), e.timestamp)))
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .windowed_by(tumbling(600, cfg.grace)?)
        .count(
            Materialized::named(stores::DEVICE_DISTRIBUTION, Utf8, Json::<i64>::new())
                .with_caching()
                .with_retention(Duration::from_secs(6 * 3600)),
        );
    emit(
        table.to_stream(),
        "device_distribution",
        &cfg.topic("eventmart-analytics"),
        |k, count| WindowedMetric {
            metric: "device_distribution".into(),
            key: k.key.clone(),
            window_start: k.window.start,
            window_end: k.window.end,
            count,
            total: None,
            average: None,
        },
    );
    Ok(b.build()?)
}
