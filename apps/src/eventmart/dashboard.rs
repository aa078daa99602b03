//! The live dashboard and its JSON API, served by the apps' process from
//! interactive queries over their state stores.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the page (one HTML file, no external resources; polls `/api/summary`) |
//! | `GET /api/summary` | everything the page shows, as JSON |
//! | `GET /api/events-per-minute` | per 1 min window: count per event type |
//! | `GET /api/revenue-per-category` | per 5 min window: total, count, average per category |
//! | `GET /api/device-distribution` | per 10 min window: count per device |
//! | `GET /api/order-funnel` | orders per lifecycle stage |
//! | `GET /api/orders/<order id>` | one order's lifecycle state (404 if unknown) |
//! | `GET /api/apps` | each app: state, records, throughput, lag |
//! | `GET /metrics` | every app's metrics, Prometheus text format |
//!
//! Binds to loopback unless told otherwise; with basic auth configured,
//! every path needs it (401 otherwise). Only `GET` (405), request heads up
//! to 8 KiB (431), known paths (404); a section whose app is not run by
//! this process is `null` in the summary and 503 on its own path.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_runtime::streams::{MetricsHandle, StoreQueries};
use brook_topology::Windowed;
use serde_json::{Value, json};

use super::apps::{OrderState, Revenue, stores};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Largest request head accepted, bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once; more get 503.
const MAX_CONNECTIONS: usize = 32;
/// How long a store query may wait for the stream threads.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One running app: its name and handles on its instance.
#[derive(Debug, Clone)]
pub struct RunningApp {
    /// `events-per-minute`, ...
    pub name: String,
    /// Interactive queries over its stores.
    pub queries: StoreQueries,
    /// Its metrics.
    pub metrics: MetricsHandle,
}

#[derive(Debug, Default)]
struct Rates {
    last: BTreeMap<String, (Instant, u64)>,
    rate: BTreeMap<String, f64>,
}

/// What the dashboard serves.
#[derive(Debug)]
pub struct Dashboard {
    apps: Vec<RunningApp>,
    basic_auth: Option<String>,
    rates: Mutex<Rates>,
    windows: usize,
}

fn err(status: u16, message: impl Into<String>) -> (u16, Value) {
    (status, json!({ "error": message.into() }))
}

impl Dashboard {
    /// A dashboard over `apps`; `basic_auth` is `user:password`.
    pub fn new(apps: Vec<RunningApp>, basic_auth: Option<String>) -> Self {
        Dashboard {
            apps,
            basic_auth,
            rates: Mutex::new(Rates::default()),
            windows: 30,
        }
    }

    fn app(&self, name: &str) -> Option<&RunningApp> {
        self.apps.iter().find(|a| a.name == name)
    }

    fn query<K, V>(&self, app: &str, store: &str) -> Result<BTreeMap<K, V>, (u16, Value)>
    where
        K: Ord + Send + 'static,
        V: Send + 'static,
    {
        let app = self
            .app(app)
            .ok_or_else(|| err(503, format!("app {app} is not run by this process")))?;
        app.queries
            .read_store(store, QUERY_TIMEOUT)
            .map_err(|e| err(503, format!("{}: {e}", app.name)))
    }

    /// Count per key and window of a windowed count store, the latest
    /// `self.windows` windows: `[{window_start, window_end, counts: {key: n}}]`.
    fn windowed_counts(&self, app: &str, store: &str) -> Result<Value, (u16, Value)> {
        let all = self.query::<Windowed<String>, i64>(app, store)?;
        let mut by_window: BTreeMap<(i64, i64), BTreeMap<String, i64>> = BTreeMap::new();
        for (k, v) in all {
            by_window
                .entry((k.window.start, k.window.end))
                .or_default()
                .insert(k.key, v);
        }
        let skip = by_window.len().saturating_sub(self.windows);
        Ok(Value::Array(
            by_window
                .into_iter()
                .skip(skip)
                .map(|((start, end), counts)| {
                    json!({ "window_start": start, "window_end": end, "counts": counts })
                })
                .collect(),
        ))
    }

    fn revenue(&self) -> Result<Value, (u16, Value)> {
        let all = self.query::<Windowed<String>, Revenue>(
            "revenue-per-category",
            stores::REVENUE_PER_CATEGORY,
        )?;
        let mut by_window: BTreeMap<(i64, i64), BTreeMap<String, Value>> = BTreeMap::new();
        for (k, r) in all {
            by_window
                .entry((k.window.start, k.window.end))
                .or_default()
                .insert(
                    k.key,
                    json!({ "total": r.total, "count": r.count, "average": r.average() }),
                );
        }
        let skip = by_window.len().saturating_sub(self.windows);
        Ok(Value::Array(
            by_window
                .into_iter()
                .skip(skip)
                .map(|((start, end), categories)| {
                    json!({ "window_start": start, "window_end": end, "categories": categories })
                })
                .collect(),
        ))
    }

    fn funnel(&self) -> Result<Value, (u16, Value)> {
        let counts = self.query::<String, i64>("order-analytics", stores::ORDER_FUNNEL)?;
        Ok(json!(counts))
    }

    fn order(&self, id: &str) -> Result<Value, (u16, Value)> {
        let app = self
            .app("order-analytics")
            .ok_or_else(|| err(503, "app order-analytics is not run by this process"))?;
        match app.queries.get::<String, OrderState>(
            stores::ORDER_STATE,
            id.to_owned(),
            QUERY_TIMEOUT,
        ) {
            Ok(Some(state)) => Ok(json!(state)),
            Ok(None) => Err(err(404, format!("no order {id:?}"))),
            Err(e) => Err(err(503, format!("order-analytics: {e}"))),
        }
    }

    /// Each app: state, records processed, throughput since the last call,
    /// lag, dead letters, late records.
    pub fn apps(&self) -> Value {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut out = Vec::new();
        for app in &self.apps {
            let threads = app.metrics.threads();
            let processed: u64 = threads.iter().map(|t| t.tasks.processed).sum();
            let lag: i64 = threads.iter().map(|t| t.io.lag).sum();
            let dead: u64 = threads.iter().map(|t| t.tasks.dead_lettered).sum();
            let late: u64 = threads.iter().map(|t| t.tasks.late_records).sum();
            let records_out: u64 = threads.iter().map(|t| t.io.records_out).sum();
            let e2e_sum: u64 = threads.iter().map(|t| t.tasks.e2e_latency_ms_sum).sum();
            if let Some((then, before)) = rates.last.get(&app.name).copied() {
                let secs = now.duration_since(then).as_secs_f64();
                if secs >= 0.5 {
                    let rate = processed.saturating_sub(before) as f64 / secs;
                    rates.rate.insert(app.name.clone(), rate);
                    rates.last.insert(app.name.clone(), (now, processed));
                }
            } else {
                rates.last.insert(app.name.clone(), (now, processed));
            }
            out.push(json!({
                "name": app.name,
                "state": format!("{:?}", app.metrics.state()),
                "processed": processed,
                "records_out": records_out,
                "records_per_second": rates.rate.get(&app.name).copied().unwrap_or(0.0),
                "lag": lag,
                "dead_lettered": dead,
                "late_records": late,
                "mean_e2e_latency_ms": if processed > 0 { e2e_sum as f64 / processed as f64 } else { 0.0 },
            }));
        }
        Value::Array(out)
    }

    /// Everything the page shows.
    pub fn summary(&self) -> Value {
        let section = |r: Result<Value, (u16, Value)>| r.unwrap_or(Value::Null);
        json!({
            "now": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            "apps": self.apps(),
            "events_per_minute": section(self.windowed_counts("events-per-minute", stores::EVENTS_PER_MINUTE)),
            "revenue_per_category": section(self.revenue()),
            "device_distribution": section(self.windowed_counts("device-distribution", stores::DEVICE_DISTRIBUTION)),
            "order_funnel": section(self.funnel()),
        })
    }

    fn prometheus(&self) -> String {
        self.apps.iter().map(|a| a.metrics.prometheus()).collect()
    }

    fn authorized(&self, head: &str) -> bool {
        let Some(expected) = &self.basic_auth else {
            return true;
        };
        use base64::Engine as _;
        let want = base64::engine::general_purpose::STANDARD.encode(expected);
        head.lines().skip(1).any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("authorization")
                    && value
                        .trim()
                        .strip_prefix("Basic ")
                        .is_some_and(|v| constant_time_eq(v.trim().as_bytes(), want.as_bytes()))
            })
        })
    }

    /// Answers one request head: status, content type, body.
    pub fn route(&self, head: &str) -> (u16, &'static str, Vec<u8>) {
        let json_response = |(status, value): (u16, Value)| {
            (status, "application/json", value.to_string().into_bytes())
        };
        let mut parts = head.lines().next().unwrap_or("").split(' ');
        let (method, target, version) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
            return json_response(err(400, "malformed request line"));
        }
        if !self.authorized(head) {
            return json_response(err(401, "authentication required"));
        }
        if method != "GET" {
            return json_response(err(405, format!("{method} is not allowed; only GET")));
        }
        let path = target.split('?').next().unwrap_or("");
        let ok = |v: Value| json_response((200, v));
        match path {
            "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
            "/api/summary" => ok(self.summary()),
            "/api/apps" => ok(self.apps()),
            "/api/events-per-minute" => json_response(
                self.windowed_counts("events-per-minute", stores::EVENTS_PER_MINUTE)
                    .map(|v| (200, v))
                    .unwrap_or_else(|e| e),
            ),
            "/api/revenue-per-category" => {
                json_response(self.revenue().map(|v| (200, v)).unwrap_or_else(|e| e))
            }
            "/api/device-distribution" => json_response(
                self.windowed_counts("device-distribution", stores::DEVICE_DISTRIBUTION)
                    .map(|v| (200, v))
                    .unwrap_or_else(|e| e),
            ),
            "/api/order-funnel" => {
                json_response(self.funnel().map(|v| (200, v)).unwrap_or_else(|e| e))
            }
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                self.prometheus().into_bytes(),
            ),
            p if p.starts_with("/api/orders/") => {
                let id = &p["/api/orders/".len()..];
                if id.is_empty() || id.len() > 128 || id.contains('/') {
                    return json_response(err(400, "expected /api/orders/<order id>"));
                }
                json_response(self.order(id).map(|v| (200, v)).unwrap_or_else(|e| e))
            }
            _ => json_response(err(
                404,
                format!("no such path {path:?}; try / or /api/summary"),
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n",
        reason(status),
        body.len()
    );
    if status == 401 {
        head.push_str("www-authenticate: Basic realm=\"eventmart\"\r\n");
    }
    if status == 405 {
        head.push_str("allow: GET\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn handle(mut stream: TcpStream, dashboard: &Dashboard) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_REQUEST {
            let body = json!({ "error": "request head over 8 KiB" }).to_string();
            return write_response(&mut stream, 431, "application/json", body.as_bytes());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(());
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let Ok(head) = std::str::from_utf8(&buf) else {
        let body = json!({ "error": "request head is not UTF-8" }).to_string();
        return write_response(&mut stream, 400, "application/json", body.as_bytes());
    };
    let (status, content_type, body) = dashboard.route(head);
    write_response(&mut stream, status, content_type, &body)
}

/// Serves `dashboard` on `listener` until the process ends (a thread per
/// connection, at most 32 at once).
pub fn serve(listener: TcpListener, dashboard: Arc<Dashboard>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = write_response(
                &mut stream,
                503,
                "application/json",
                b"{\"error\":\"busy\"}",
            );
            continue;
        }
        let (dashboard, done) = (dashboard.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                if let Err(e) = handle(stream, &dashboard) {
                    tracing::debug!(error = %e, "dashboard request failed");
                }
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("could not spawn a dashboard connection thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(addr: std::net::SocketAddr, text: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(text).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn start(auth: Option<&str>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dashboard = Arc::new(Dashboard::new(Vec::new(), auth.map(str::to_owned)));
        std::thread::spawn(move || serve(listener, dashboard));
        addr
    }

    #[test]
    fn the_page_and_api_answer_get_and_refuse_the_rest_with_4xx() {
        let addr = start(None);
        let page = request(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("text/html") && page.contains("<title>EventMart"));
        let summary = request(addr, b"GET /api/summary HTTP/1.1\r\n\r\n");
        assert!(summary.starts_with("HTTP/1.1 200 OK"), "{summary}");
        let body = summary.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        // No apps in this process: sections are null, not errors.
        assert!(v["events_per_minute"].is_null() && v["apps"].as_array().unwrap().is_empty());
        let missing = request(addr, b"GET /api/revenue-per-category HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 503"), "{missing}");
        assert!(missing.contains("revenue-per-category is not run by this process"));
        assert!(request(addr, b"POST /api/summary HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(request(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(request(addr, b"GET /api/orders/ HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(request(addr, b"GET /api/orders/a/b HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(request(addr, b"garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 10_000));
        assert!(request(addr, &huge).starts_with("HTTP/1.1 431"));
        assert!(request(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn basic_auth_guards_every_path() {
        let addr = start(Some("ops:s3cret"));
        let denied = request(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
        assert!(denied.contains("www-authenticate: Basic"));
        assert!(request(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 401"));
        use base64::Engine as _;
        let wrong = base64::engine::general_purpose::STANDARD.encode("ops:guess");
        let r = request(
            addr,
            format!("GET / HTTP/1.1\r\nAuthorization: Basic {wrong}\r\n\r\n").as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 401"));
        let right = base64::engine::general_purpose::STANDARD.encode("ops:s3cret");
        let r = request(
            addr,
            format!("GET / HTTP/1.1\r\nauthorization: Basic {right}\r\n\r\n").as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
}
