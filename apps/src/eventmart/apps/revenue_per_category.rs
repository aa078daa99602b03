//! `revenue-per-category`: total, count and average of PURCHASE prices per
//! category in 5 min windows.

use super::*;

/// Total, count and average of PURCHASE prices per category in 5 min
/// tumbling windows (purchases written in v1 have no price and are left out).
pub fn revenue_per_category(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let table = cfg
        .clicks(&b)
        .flat_map(
            |_, e: UserEventV2| match (e.event_type, e.category, e.price) {
                (EventType::Purchase, Some(category), Some(price)) => Some((category, price)),
                _ => None,
            },
        )
        .group_by_key(Grouped::with(Utf8, Json::<f64>::new()))
        .windowed_by(tumbling(300, cfg.grace)?)
        .aggregate(
            Revenue::default,
            |_, price, acc: Revenue| Revenue {
                total: acc.total + price,
                count: acc.count + 1,
            },
            Materialized::named(stores::REVENUE_PER_CATEGORY, Utf8, Json::<Revenue>::new())
                .with_caching()
                .with_retention(Duration::from_secs(3 * 3600)),
        );
    emit(
        table.to_stream(),
        "revenue_per_category",
        &cfg.topic("eventmart-analytics"),
        |k, r: Revenue| WindowedMetric {
            metric: "revenue_per_category".into(),
            key: k.key.clone(),
            window_start: k.window.start,
            window_end: k.window.end,
            count: r.count,
            total: Some(r.total),
            average: Some(r.average()),
        },
    );
    Ok(b.build()?)
}
