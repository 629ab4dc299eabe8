//! The receiver's Prometheus metrics: counters and histograms kept in this process and
//! rendered in the text format by the `/metrics` endpoint (off by default). Gauges that
//! belong to the site rather than the process (registrations, stale hosts) are read from
//! the database at scrape time and passed to [`render`].
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

struct Metrics {
    pulls: Family<Outcome, Counter>,
    pull_handshakes: Family<Kind, Counter>,
    pull_seconds: Histogram,
    registrations: Family<Outcome, Counter>,
    pushes: Family<Outcome, Counter>,
    password_verifications: Family<Outcome, Counter>,
    db_seconds: Histogram,
}

fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        pulls: Family::default(),
        pull_handshakes: Family::default(),
        // 1 ms … ~16 s.
        pull_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.001, 2.0, 15,
        )),
        registrations: Family::default(),
        pushes: Family::default(),
        password_verifications: Family::default(),
        // 50 µs … ~1.6 s.
        db_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.00005, 2.0, 16,
        )),
    })
}

fn count(f: &Family<Outcome, Counter>, outcome: &str) {
    f.get_or_create(&Outcome {
        outcome: outcome.to_string(),
    })
    .inc();
}

/// A finished pull of one host: `outcome` is `ok` or the error's stable code.
pub fn pull_finished(outcome: &str, seconds: f64) {
    let m = global();
    count(&m.pulls, outcome);
    m.pull_seconds.observe(seconds);
}

/// A pull's completed TLS handshake: `full` or `resumed` (a TLS 1.3 ticket from an
/// earlier pull of the same connection).
pub fn pull_handshake(resumed: bool) {
    let kind = if resumed { "resumed" } else { "full" };
    global().pull_handshakes.get_or_create(&Kind { kind }).inc();
}

/// An answered registration request: `outcome` is `registered` (an existing host got its
/// certificate), `new` (a new-host registration accepted, decided by rules or approval), or
/// `refused`.
pub fn registration(outcome: &str) {
    count(&global().registrations, outcome);
}

/// An answered push (`agent_data`): `ok` or `refused`.
pub fn push(outcome: &str) {
    count(&global().pushes, outcome);
}

/// A password checked with argon2 (not answered from the credential cache): `ok`,
/// `wrong_password`, or `unknown_user`.
pub fn password_verification(outcome: &str) {
    count(&global().password_verifications, outcome);
}

/// One database operation (a read or a committed write batch) and how long it took.
pub fn db_op(seconds: f64) {
    global().db_seconds.observe(seconds);
}

/// The metrics in Prometheus' text format, with the site's `gauges` (name, help, value).
pub fn render(gauges: &[(&str, &str, i64)]) -> String {
    let m = global();
    let mut reg = Registry::with_prefix("tether_receiver");
    reg.register(
        "pulls",
        "Scheduled and manual pulls by outcome",
        m.pulls.clone(),
    );
    reg.register(
        "pull_handshakes",
        "TLS handshakes of pulls: full, or resumed with a session ticket",
        m.pull_handshakes.clone(),
    );
    reg.register(
        "pull_duration_seconds",
        "Duration of pulls",
        m.pull_seconds.clone(),
    );
    reg.register(
        "registration_requests",
        "Registration requests by outcome",
        m.registrations.clone(),
    );
    reg.register(
        "pushes",
        "Pushed agent outputs by outcome",
        m.pushes.clone(),
    );
    reg.register(
        "password_verifications",
        "Passwords checked with argon2 rather than from the credential cache, by outcome",
        m.password_verifications.clone(),
    );
    reg.register(
        "database_duration_seconds",
        "Duration of database reads and write batches",
        m.db_seconds.clone(),
    );
    for (name, help, value) in gauges {
        let g: Gauge = Gauge::default();
        g.set(*value);
        reg.register(*name, *help, g);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// The site's gauges, read from the database at scrape time.
pub fn site_gauges(
    c: &crate::receiver::store::Connection,
) -> crate::receiver::store::sql::Result<Vec<(&'static str, &'static str, i64)>> {
    let now = crate::receiver::store::now();
    let hosts = crate::receiver::health::health(c, now)?;
    let count = |f: &dyn Fn(&crate::receiver::health::HostHealth) -> bool| {
        hosts.iter().filter(|h| f(h)).count() as i64
    };
    Ok(vec![
        (
            "registrations",
            "Live registrations (not revoked, certificate valid)",
            crate::receiver::health::live_registrations(c, now)?,
        ),
        ("hosts", "Hosts delivering agent output", hosts.len() as i64),
        (
            "scheduled_hosts",
            "Pull hosts the scheduler pulls",
            count(&|h| h.scheduled),
        ),
        (
            "stale_hosts",
            "Hosts without output within 1.5 intervals",
            count(&|h| h.stale),
        ),
    ])
}

/// Serves `GET /metrics` (plain HTTP: bind it to loopback or a monitoring network) until
/// `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: crate::receiver::store::Db,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let db = db.clone();
            async move {
                match db.read(site_gauges) {
                    Ok(g) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(&g),
                    )
                        .into_response(),
                    Err(e) => {
                        tracing::warn!("metrics: {e}");
                        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
                    }
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters_histograms_and_gauges() {
        super::pull_finished("ok", 0.004);
        super::pull_finished("connection_failed", 1.5);
        let text = super::render(&[("stale_hosts", "Hosts whose output is stale", 3)]);
        assert!(
            text.contains("tether_receiver_pulls_total{outcome=\"ok\"}"),
            "{text}"
        );
        assert!(
            text.contains("tether_receiver_pull_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("tether_receiver_stale_hosts 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
