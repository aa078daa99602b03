//! `events-per-minute`: events per type in 1 min tumbling windows.

use super::*;

/// Events per type in 1 min tumbling windows.
pub fn events_per_minute(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let table = cfg
        .clicks(&b)
        .map(|_, e: UserEventV2| (e.event_type.as_str().to_owned(), e.timestamp))
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .windowed_by(tumbling(60, cfg.grace)?)
        .count(
            Materialized::named(stores::EVENTS_PER_MINUTE, Utf8, Json::<i64>::new()).with_caching(),
        );
    emit(
        table.to_stream(),
        "events_per_minute",
        &cfg.topic("eventmart-analytics"),
        |k, count| WindowedMetric {
            metric: "events_per_minute".into(),
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
