//! The admin listener (`--admin-listen`, loopback only, never the public port): `/healthz` for
//! load balancers and container health checks, `/metrics` in the OpenMetrics text format that
//! Prometheus scrapes. Both read the same snapshot as `khttpd-ctl status`, taken by the management
//! daemon, so the numbers of the three never disagree.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, SERVER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::net::TcpListener;

/// Takes the management daemon's status snapshot (`None` while it is shutting down).
pub(crate) type Snapshot =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<Value>> + Send>> + Send + Sync>;

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long `/metrics` waits for the snapshot (the management daemon may be waiting for a drain).
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<crate::daemon::state::Shared>,
    snapshot: Snapshot,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (snapshot, shared) = (snapshot.clone(), shared.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, shared.clone(), snapshot.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<crate::daemon::state::Shared>,
    snapshot: Snapshot,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        r.headers_mut().insert(
            SERVER,
            HeaderValue::from_static(crate::conn::wire::SERVER_NAME),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET /healthz or /metrics\n".into(),
        ));
    }
    if req.uri().path() == "/healthz" {
        // Read directly: answered at once even while the management daemon waits for a drain.
        return Ok(
            if shared.serving.load(std::sync::atomic::Ordering::Relaxed) {
                reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "stopped or draining\n".into(),
                )
            },
        );
    }
    let status = if req.uri().path() == "/metrics" {
        tokio::time::timeout(SNAPSHOT_WAIT, snapshot())
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    Ok(match (req.uri().path(), status) {
        ("/metrics", Some(s)) => reply(StatusCode::OK, OPENMETRICS, render(&s)),
        ("/metrics", None) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "busy (stopping or shutting down); try again\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "GET /healthz or /metrics\n".into(),
        ),
    })
}

type Labels = Vec<(String, String)>;

/// A histogram whose counts are taken from a status snapshot (`latency` in `khttpd-ctl status
/// --json`): the main daemons keep the buckets, `/metrics` only renders them.
#[derive(Debug, Default)]
struct Snapshotted {
    data: std::sync::Mutex<Counts>,
}

/// Sum (seconds), count, and (upper bound in seconds, count) per bucket, +Inf last.
type Counts = (f64, u64, Vec<(f64, u64)>);

impl Snapshotted {
    fn set(&self, latency: &Value, key: &str) {
        let bounds: Vec<f64> = latency["bounds_us"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b.as_f64().unwrap_or(0.0) / 1e6)
            .chain(std::iter::once(f64::MAX))
            .collect();
        let counts: Vec<u64> = latency[key]["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(n)
            .collect();
        let buckets: Vec<(f64, u64)> = bounds.into_iter().zip(counts.iter().copied()).collect();
        let sum = n(&latency[key]["sum_us"]) as f64 / 1e6;
        let mut d = self
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *d = (sum, counts.iter().sum(), buckets);
    }
}

impl prometheus_client::metrics::TypedMetric for Snapshotted {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for Snapshotted {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let d = self
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(d.0, d.1, &d.2, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A status snapshot (as `khttpd-ctl status --json` shows it) in the OpenMetrics text format.
pub(crate) fn render(s: &Value) -> String {
    let mut reg = Registry::with_prefix("khttpd");
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        reg.register(name, help, g);
    };
    let counter = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    };
    gauge(
        &mut reg,
        "up",
        "1 while the main daemons listen, 0 while stopped",
        i64::from(s["state"] == "running"),
    );
    gauge(
        &mut reg,
        "uptime_seconds",
        "Seconds since the process started",
        n(&s["uptime_secs"]) as i64,
    );
    gauge(
        &mut reg,
        "connections",
        "Client connections open over all main daemons",
        n(&s["connections"]) as i64,
    );
    gauge(
        &mut reg,
        "maxconnect",
        "Most client connections open at once (kHTTPd's maxconnect)",
        n(&s["maxconnect"]) as i64,
    );

    let stages = Family::<Labels, Gauge>::default();
    let requests = Family::<Labels, Counter>::default();
    let responses = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let backend_errors = Family::<Labels, Counter>::default();
    let offload = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for d in s["daemons"].as_array().into_iter().flatten() {
        let daemon = d["daemon"].to_string();
        let l = |k: &str, v: &str| {
            vec![
                ("daemon".to_owned(), daemon.clone()),
                (k.to_owned(), v.to_owned()),
            ]
        };
        for stage in ["waiting", "sending", "userspace", "logging"] {
            stages
                .get_or_create(&l("stage", stage))
                .set(n(&d[stage]) as i64);
        }
        for route in ["static", "backend", "errors"] {
            requests
                .get_or_create(&l("route", route.trim_end_matches('s')))
                .inc_by(n(&d[route]));
        }
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            responses
                .get_or_create(&l("class", class))
                .inc_by(n(&d[class]));
        }
        let only = vec![("daemon".to_owned(), daemon.clone())];
        bytes.get_or_create(&only).inc_by(n(&d["bytes_out"]));
        backend_errors
            .get_or_create(&only)
            .inc_by(n(&d["backend_errors"]));
        offload
            .get_or_create(&only)
            .set(d["offload"].as_f64().unwrap_or(0.0));
    }
    reg.register(
        "stage_requests",
        "Requests in each of kHTTPd's stages now, per main daemon",
        stages,
    );
    reg.register(
        "requests",
        "Requests by route: static (the front), backend, error (the front's own error answers)",
        requests,
    );
    reg.register("responses", "Responses by status class", responses);
    reg.register("sent_bytes", "Body bytes sent to clients", bytes);
    let durations = Family::<Labels, Snapshotted>::default();
    for (route, key) in [("front", "front"), ("backend", "backend")] {
        durations
            .get_or_create(&vec![("route".to_owned(), route.to_owned())])
            .set(&s["latency"], key);
    }
    reg.register_with_unit(
        "request_duration",
        "Time to answer: front (static files and the front's own errors), backend (through Apache)",
        prometheus_client::registry::Unit::Seconds,
        durations,
    );
    let head = Snapshotted::default();
    head.set(&s["latency"], "upstream");
    reg.register_with_unit(
        "backend_response_head",
        "The backend's time to its response head, from sending the request (time to first byte)",
        prometheus_client::registry::Unit::Seconds,
        head,
    );
    reg.register(
        "backend_errors",
        "Requests the backend failed (refused, reset, timed out, bad answer, queue full)",
        backend_errors,
    );
    reg.register(
        "offload_ratio",
        "Share of requests the front answered itself",
        offload,
    );

    let healthy = Family::<Labels, Gauge>::default();
    let in_flight = Family::<Labels, Gauge>::default();
    let idle = Family::<Labels, Gauge>::default();
    let b_requests = Family::<Labels, Counter>::default();
    let failures = Family::<Labels, Counter>::default();
    let retries = Family::<Labels, Counter>::default();
    let discarded = Family::<Labels, Counter>::default();
    for b in s["backends"].as_array().into_iter().flatten() {
        let addr = b["backend"].as_str().unwrap_or("-").to_owned();
        let l = vec![("backend".to_owned(), addr.clone())];
        healthy
            .get_or_create(&l)
            .set(i64::from(b["healthy"] == true));
        in_flight.get_or_create(&l).set(n(&b["in_flight"]) as i64);
        idle.get_or_create(&l).set(n(&b["idle_pooled"]) as i64);
        b_requests.get_or_create(&l).inc_by(n(&b["requests"]));
        retries.get_or_create(&l).inc_by(n(&b["retries"]));
        discarded.get_or_create(&l).inc_by(n(&b["discarded"]));
        for kind in [
            "refused",
            "reset",
            "timeouts",
            "bad_responses",
            "queue_full",
        ] {
            let l = vec![
                ("backend".to_owned(), addr.clone()),
                ("kind".to_owned(), kind.to_owned()),
            ];
            failures.get_or_create(&l).inc_by(n(&b[kind]));
        }
    }
    reg.register(
        "backend_healthy",
        "1 unless the backend is cooling down after a failure",
        healthy,
    );
    reg.register(
        "backend_in_flight",
        "Requests holding one of the backend's slots",
        in_flight,
    );
    reg.register(
        "backend_idle_connections",
        "Idle keep-alive connections to the backend in the pools",
        idle,
    );
    reg.register(
        "backend_requests",
        "Requests sent to the backend",
        b_requests,
    );
    reg.register("backend_failures", "Backend failures by kind", failures);
    reg.register(
        "backend_retries",
        "Requests sent again after a reused connection was found closed",
        retries,
    );
    reg.register(
        "backend_discarded_connections",
        "Backend connections closed instead of pooled: bytes past the answer",
        discarded,
    );

    let c = &s["cache"];
    counter(&mut reg, "cache_hits", "Content cache hits", n(&c["hits"]));
    counter(
        &mut reg,
        "cache_misses",
        "Content cache misses",
        n(&c["misses"]),
    );
    counter(
        &mut reg,
        "cache_evictions",
        "Content cache entries evicted",
        n(&c["evictions"]),
    );
    counter(
        &mut reg,
        "cache_compressions",
        "Compressions made (one per file version and coding)",
        n(&c["compressions"]),
    );
    counter(
        &mut reg,
        "cache_compressions_deferred",
        "Compressions put off because every compression thread was busy and the queue full",
        n(&c["compressions_deferred"]),
    );
    gauge(
        &mut reg,
        "cache_bytes",
        "Bytes held by the content cache",
        n(&c["bytes"]) as i64,
    );
    gauge(
        &mut reg,
        "cache_capacity_bytes",
        "The content cache's size (--cache-size)",
        n(&c["capacity"]) as i64,
    );
    gauge(
        &mut reg,
        "cache_entries",
        "Entries in the content cache",
        n(&c["entries"]) as i64,
    );

    let v = &s["verify"];
    counter(
        &mut reg,
        "verify_verified",
        "Verification probes whose answer was the file as it is",
        n(&v["verified"]),
    );
    counter(
        &mut reg,
        "verify_refused",
        "Verification probes whose answer was anything else",
        n(&v["refused"]),
    );
    counter(
        &mut reg,
        "verify_expired",
        "Verdicts found past --verify-ttl and asked again",
        n(&v["expired"]),
    );
    counter(
        &mut reg,
        "verify_probes",
        "Verification probes sent",
        n(&v["probes"]),
    );
    counter(
        &mut reg,
        "verify_probe_errors",
        "Verification probes that failed",
        n(&v["probe_errors"]),
    );
    counter(
        &mut reg,
        "verify_flushes",
        "khttpd-ctl flush calls",
        n(&v["flushes"]),
    );
    gauge(
        &mut reg,
        "verify_in_flight",
        "Verification probes running",
        n(&v["in_flight"]) as i64,
    );
    gauge(
        &mut reg,
        "verify_entries",
        "Verdicts held",
        n(&v["entries"]) as i64,
    );

    let a = &s["access_log"];
    counter(
        &mut reg,
        "access_log_written",
        "Access-log lines written",
        n(&a["written"]),
    );
    counter(
        &mut reg,
        "access_log_dropped",
        "Access-log lines dropped on a full queue",
        n(&a["dropped"]),
    );
    counter(
        &mut reg,
        "access_log_errors",
        "Access-log write errors",
        n(&a["errors"]),
    );
    gauge(
        &mut reg,
        "access_log_queue",
        "Access-log lines waiting for the writer",
        n(&a["queue"]) as i64,
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_snapshot_becomes_openmetrics() {
        let s = serde_json::json!({
            "state": "running", "uptime_secs": 5, "connections": 3, "maxconnect": 100,
            "daemons": [{"daemon": 0, "waiting": 1, "sending": 2, "userspace": 0, "logging": 0,
                "static": 10, "backend": 5, "errors": 1, "2xx": 14, "3xx": 0, "4xx": 1, "5xx": 1,
                "bytes_out": 999, "backend_errors": 1, "offload": 0.625}],
            "backends": [{"backend": "127.0.0.1:8080", "healthy": true, "requests": 5,
                "in_flight": 0, "retries": 0, "refused": 1, "reset": 0, "timeouts": 0,
                "bad_responses": 0, "queue_full": 0, "idle_pooled": 2, "discarded": 0}],
            "cache": {"hits": 7, "misses": 3, "evictions": 0, "bytes": 100, "capacity": 1000,
                "entries": 4, "compressions": 1},
            "verify": {"verified": 2, "refused": 1, "expired": 0, "probes": 3, "probe_errors": 0,
                "in_flight": 0, "entries": 3, "flushes": 0},
            "access_log": {"written": 16, "dropped": 0, "queue": 0, "errors": 0},
        });
        let text = render(&s);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("khttpd_requests_total{daemon=\"0\",route=\"static\"} 10"),
            "{text}"
        );
        assert!(text.contains("khttpd_stage_requests{daemon=\"0\",stage=\"sending\"} 2"));
        assert!(text.contains("khttpd_offload_ratio{daemon=\"0\"} 0.625"));
        assert!(text.contains(
            "khttpd_backend_failures_total{backend=\"127.0.0.1:8080\",kind=\"refused\"} 1"
        ));
        assert!(text.contains("khttpd_verify_verified_total 2"));
        assert!(text.contains("khttpd_up 1"));
    }
}
