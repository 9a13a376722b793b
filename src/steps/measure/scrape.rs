//! The server's own view of a cell: its Prometheus `/metrics` (vLLM, SGLang and TGI
//! serve one), scraped at the cell's start, at a fixed interval and at its end, on the
//! requests' monotonic clock, into a tidy table (`metrics.parquet`, `metrics.csv`:
//! `t_ns`, `metric`, `labels`, `value`), and what follows from it per cell
//! ([`summarize`]: cache hit rates, KV-cache use, queues, the server's own time to
//! first token).
//!
//! Scraping runs in its own task, off the request path, with its own connection and a
//! bounded body and row count. A server without `/metrics`, or one that answers slowly
//! or with garbage, costs the measurement nothing: what happened is recorded. What a
//! server says is untrusted: a body that breaks off is not parsed as if whole, a
//! sample that is not a finite number (`+Inf`, `NaN`, `1e999`) is dropped and counted,
//! and label values are redacted as everything else a server says is (a key it echoes
//! is never stored).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{self, BodyEnd};
use crate::clock::monotonic_ns;
use crate::records::{Available, Quantiles, ServerMetrics};
use crate::secrets::{self, Secrets};

/// The most one scrape may read; vLLM's whole exposition is about 60 kB.
const MAX_BODY: usize = 8 << 20;
/// The most rows kept per cell (about 500 per vLLM scrape); scraping stops there.
const MAX_ROWS: usize = 2_000_000;
/// How long one scrape may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One value of one series at one scrape (a row of the `metrics` table).
pub use crate::records::MetricRow as Row;

/// What scraping a cell gave.
#[derive(Debug, Default)]
pub struct Scraped {
    pub rows: Vec<Row>,
    pub scrapes: u32,
    pub failures: u32,
    /// Why the first failed scrape failed.
    pub first_failure: Option<String>,
    /// Scraping stopped at [`MAX_ROWS`].
    pub truncated: bool,
    /// Samples dropped because their value was not a finite number.
    pub non_finite: u64,
}

/// A scraper running beside a cell's requests.
pub struct Scraper {
    stop: watch::Sender<bool>,
    task: JoinHandle<Scraped>,
}

impl Scraper {
    /// Scrape `base_url/metrics` now, before the cell's first request, then every
    /// `interval` (none: only at the end) in a task of its own. A scrape may take
    /// `timeout`, at most 5 s.
    pub async fn start(
        base_url: &str,
        api_key: Option<String>,
        secrets: Secrets,
        interval: Option<Duration>,
        timeout: Duration,
    ) -> Scraper {
        let (stop, mut stopped) = watch::channel(false);
        let url = format!("{}/metrics", base_url.trim_end_matches('/'));
        let mut out = Scraped::default();
        let client = client::builder().timeout(timeout.min(TIMEOUT)).build();
        match &client {
            Ok(client) => scrape_into(client, &url, api_key.as_deref(), &secrets, &mut out).await,
            Err(e) => out.first_failure = Some(format!("cannot build an HTTP client: {e}")),
        }
        let task = tokio::spawn(async move {
            // A server whose `/metrics` did not answer at the start is not asked again:
            // it has none, or it would only slow the cell's end.
            let Ok(client) = client else { return out };
            while out.scrapes > 0 && !out.truncated {
                let next = async {
                    match interval {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                let last = tokio::select! {
                    _ = next => false,
                    // The cell is over (or the step was dropped): the last scrape.
                    _ = stopped.changed() => true,
                };
                scrape_into(&client, &url, api_key.as_deref(), &secrets, &mut out).await;
                if last {
                    break;
                }
            }
            out
        });
        Scraper { stop, task }
    }

    /// Take the end-of-cell scrape and return everything.
    pub async fn finish(self) -> Scraped {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

async fn scrape_into(client: &reqwest::Client, url: &str, api_key: Option<&str>, secrets: &Secrets, out: &mut Scraped) {
    let mut req = client.get(url);
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let fail = |out: &mut Scraped, why: String| {
        out.failures += 1;
        out.first_failure.get_or_insert(why);
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return fail(out, format!("GET /metrics: {}", client::why(&e))),
    };
    let status = resp.status();
    if !status.is_success() {
        return fail(out, format!("GET /metrics answered HTTP {}", status.as_u16()));
    }
    let (body, end) = client::read_capped(resp, MAX_BODY).await;
    // Stamped when the answer is in: the server's values are at most this old.
    let t_ns = monotonic_ns();
    match end {
        BodyEnd::Complete => {}
        BodyEnd::TooLong => return fail(out, format!("GET /metrics answered more than {} MiB", MAX_BODY >> 20)),
        BodyEnd::Broken => {
            return fail(out, format!("GET /metrics broke off after {} bytes (timed out or closed): a part is not the whole", body.len()));
        }
    }
    match parse(&String::from_utf8_lossy(&body), t_ns, secrets) {
        Ok(Parsed { rows, non_finite }) if rows.is_empty() => {
            out.non_finite += non_finite;
            fail(out, "GET /metrics held no finite samples".into())
        }
        Ok(Parsed { rows, non_finite }) => {
            out.non_finite += non_finite;
            out.scrapes += 1;
            if out.rows.len() + rows.len() > MAX_ROWS {
                out.truncated = true;
                return;
            }
            out.rows.extend(rows);
        }
        Err(e) => fail(out, format!("GET /metrics is not Prometheus's text format: {e}")),
    }
}

/// The samples of one exposition.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub rows: Vec<Row>,
    /// Samples dropped because their value was `±Inf`, `NaN` or out of `f64`'s range.
    pub non_finite: u64,
}

/// One exposition in Prometheus's text format, as rows at `t_ns` (label values
/// redacted with `secrets` and of key-shaped words); the parser's complaint when it is
/// not one.
pub fn parse(text: &str, t_ns: u64, secrets: &Secrets) -> Result<Parsed, String> {
    let (_, families) = nom_openmetrics::parser::prometheus(text).map_err(|e| match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => {
            let at = e.errors.first().map(|(rest, _)| text.len() - rest.len()).unwrap_or_default();
            let line = text[..at].matches('\n').count() + 1;
            format!("cannot parse line {line}")
        }
        nom::Err::Incomplete(_) => "it ends mid-line".to_string(),
    })?;
    let (mut rows, mut non_finite) = (Vec::new(), 0);
    for sample in families.iter().flat_map(|f| &f.samples) {
        if !sample.number().is_finite() {
            non_finite += 1;
            continue;
        }
        let mut labels: Vec<String> =
            sample.labels().iter().map(|l| format!("{}={:?}", l.name, secrets::mask_key_shaped(&secrets.redact(&l.value)))).collect();
        labels.sort();
        rows.push(Row { t_ns, metric: sample.name().to_string(), labels: labels.join(","), value: sample.number() });
    }
    rows.sort_by(|a, b| (&a.metric, &a.labels).cmp(&(&b.metric, &b.labels)));
    Ok(Parsed { rows, non_finite })
}

/// Each series' values in time order, by metric name.
type Series<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<(u64, f64)>>>;

fn series(rows: &[Row]) -> Series<'_> {
    let mut by: Series = BTreeMap::new();
    for r in rows {
        by.entry(r.metric.as_str()).or_default().entry(r.labels.as_str()).or_default().push((r.t_ns, r.value));
    }
    for s in by.values_mut().flat_map(|m| m.values_mut()) {
        s.sort_by_key(|(t, _)| *t);
    }
    by
}

/// How much a counter grew over its series, as Prometheus's `increase()` reads it: a
/// value below the last one means the counter restarted from zero (the server did),
/// not that it went down. The growth, and how many restarts there were.
fn increase(points: &[(u64, f64)]) -> (f64, u32) {
    let (mut total, mut resets) = (0.0, 0);
    for w in points.windows(2) {
        let (a, b) = (w[0].1, w[1].1);
        if b < a {
            resets += 1;
            total += b;
        } else {
            total += b - a;
        }
    }
    (total, resets)
}

/// What a cell's scrapes say, as `meta.json`'s `server_metrics` records it. Absent
/// fields: the server does not export that metric (or it did not change).
pub fn summarize(scraped: &Scraped, interval: Option<Duration>) -> Available<ServerMetrics> {
    if scraped.scrapes == 0 {
        let reason = scraped.first_failure.clone().unwrap_or_else(|| "no scrape answered".into());
        return Available::No { reason };
    }
    let by = series(&scraped.rows);
    let mut resets = 0;
    // The growth of a counter over the cell, summed over its label sets.
    let mut grew = |name: &str| -> Option<f64> {
        let s = by.get(name)?;
        Some(
            s.values()
                .map(|p| {
                    let (n, r) = increase(p);
                    resets += r;
                    n
                })
                .sum(),
        )
    };
    let ratio = |hits: Option<f64>, queries: Option<f64>| match (hits, queries) {
        (Some(h), Some(q)) if q > 0.0 => Some(h / q),
        _ => None,
    };
    let prefix_queries = grew("vllm:prefix_cache_queries_total");
    let prefix = ratio(grew("vllm:prefix_cache_hits_total"), prefix_queries);
    let mm_queries = grew("vllm:mm_cache_queries_total");
    let mm = ratio(grew("vllm:mm_cache_hits_total"), mm_queries);
    let preemptions = grew("vllm:num_preemptions_total");
    let mean_of = |sum: &str, count: &str, grew: &mut dyn FnMut(&str) -> Option<f64>| match (grew(sum), grew(count)) {
        (Some(s), Some(n)) if n > 0.0 => Some(s / n * 1000.0),
        _ => None,
    };
    let ttft_mean = mean_of("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count", &mut grew);
    let queue_mean = mean_of("vllm:request_queue_time_seconds_sum", "vllm:request_queue_time_seconds_count", &mut grew);
    let quantiles = |name: &str| -> Quantiles {
        let q = |p: f64| histogram_quantile(&by, name, p).map(|s| s * 1000.0);
        Quantiles { p50: q(0.5), p90: q(0.9), p99: q(0.99) }
    };
    let (kv_mean, kv_peak) = gauge(&by, "vllm:kv_cache_usage_perc", f64::max);
    let (running_mean, running_peak) = gauge(&by, "vllm:num_requests_running", |a, b| a + b);
    let (waiting_mean, waiting_peak) = gauge(&by, "vllm:num_requests_waiting", |a, b| a + b);
    Available::Yes(ServerMetrics {
        scrapes: scraped.scrapes.into(),
        interval_s: interval.map(|d| d.as_secs_f64()),
        failures: scraped.failures.into(),
        first_failure: scraped.first_failure.clone(),
        truncated: scraped.truncated,
        non_finite_dropped: scraped.non_finite,
        counter_resets: resets as u64,
        prefix_cache_queries: prefix_queries,
        prefix_cache_hit_rate: prefix,
        mm_cache_queries: mm_queries,
        mm_cache_hit_rate: mm,
        kv_cache_usage_mean: kv_mean,
        kv_cache_usage_peak: kv_peak,
        running_mean,
        running_peak,
        waiting_mean,
        waiting_peak,
        preemptions,
        server_ttft_ms_mean: ttft_mean,
        server_ttft_ms: quantiles("vllm:time_to_first_token_seconds_bucket"),
        server_queue_ms_mean: queue_mean,
        server_queue_ms: quantiles("vllm:request_queue_time_seconds_bucket"),
    })
}

/// A gauge's mean and peak over the scrapes, its label sets combined per scrape with
/// `combine` (summed for request counts, the largest for a usage share).
fn gauge(by: &Series, name: &str, combine: fn(f64, f64) -> f64) -> (Option<f64>, Option<f64>) {
    let Some(s) = by.get(name) else { return (None, None) };
    let mut at: BTreeMap<u64, f64> = BTreeMap::new();
    for (t, v) in s.values().flatten() {
        at.entry(*t).and_modify(|x| *x = combine(*x, *v)).or_insert(*v);
    }
    let n = at.len() as f64;
    let mean = at.values().sum::<f64>() / n;
    (Some(mean), at.values().copied().reduce(f64::max))
}

/// The `p` quantile of what a histogram counted during the cell (its buckets' growth,
/// all label sets but `le` together), interpolated within a bucket as Prometheus's
/// `histogram_quantile` does ([`crate::stats::histogram_quantile`]). None when it
/// counted nothing.
fn histogram_quantile(by: &Series, name: &str, p: f64) -> Option<f64> {
    let mut counts: BTreeMap<u64, f64> = BTreeMap::new(); // le (as ordered bits) → count
    let mut bounds: BTreeMap<u64, f64> = BTreeMap::new();
    for (labels, points) in by.get(name)? {
        let le = labels.split(',').find_map(|kv| kv.strip_prefix("le=\""))?.trim_end_matches('"');
        let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        let key = ordered(le);
        *counts.entry(key).or_default() += increase(points).0;
        bounds.insert(key, le);
    }
    let buckets: Vec<(f64, f64)> = counts.iter().map(|(key, count)| (bounds[key], *count)).collect();
    crate::stats::histogram_quantile(&buckets, p)
}

/// A non-negative bound as a key that sorts like the number.
fn ordered(x: f64) -> u64 {
    x.to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} QUERIES
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} HITS
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} KV
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} B1
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="tiny"} B2
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} B3
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} B3
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} SUM
"#;

    fn scrape(t: u64, queries: f64, hits: f64, kv: f64, buckets: [f64; 3], sum: f64) -> Vec<Row> {
        let text = VLLM
            .replace("QUERIES", &queries.to_string())
            .replace("HITS", &hits.to_string())
            .replace("KV", &kv.to_string())
            .replace("B1", &buckets[0].to_string())
            .replace("B2", &buckets[1].to_string())
            .replace("B3", &buckets[2].to_string())
            .replace("SUM", &sum.to_string());
        parse(&text, t, &Secrets::default()).unwrap().rows
    }

    #[test]
    fn the_exposition_becomes_tidy_rows_with_buckets_as_labels() {
        let rows = scrape(7, 10.0, 4.0, 0.25, [1.0, 3.0, 4.0], 0.9);
        let find = |m: &str, l: &str| rows.iter().find(|r| r.metric == m && r.labels.contains(l)).map(|r| r.value);
        assert_eq!(find("vllm:prefix_cache_queries_total", "model_name=\"tiny\""), Some(10.0));
        assert_eq!(find("vllm:time_to_first_token_seconds_bucket", "le=\"0.5\""), Some(3.0));
        assert_eq!(find("vllm:time_to_first_token_seconds_bucket", "le=\"+Inf\""), Some(4.0));
        assert!(rows.iter().all(|r| r.t_ns == 7));
        assert!(rows.iter().any(|r| r.labels == "engine=\"0\",model_name=\"tiny\""), "labels sorted by name: {rows:?}");
    }

    #[test]
    fn a_cell_is_summarized_from_the_growth_of_counters() {
        let mut rows = scrape(1, 100.0, 50.0, 0.1, [2.0, 2.0, 2.0], 0.1);
        rows.extend(scrape(2, 1100.0, 350.0, 0.5, [2.0, 6.0, 6.0], 1.3));
        rows.extend(scrape(3, 2100.0, 850.0, 0.3, [4.0, 10.0, 12.0], 2.9));
        let s = summarize(&Scraped { rows, scrapes: 3, ..Default::default() }, Some(Duration::from_secs(1)));
        let s = s.as_ref().unwrap();
        // (850 − 50) hits of (2100 − 100) queried tokens.
        assert_eq!(s.prefix_cache_hit_rate, Some(0.4));
        assert_eq!(s.prefix_cache_queries, Some(2000.0));
        assert_eq!(s.kv_cache_usage_peak, Some(0.5));
        assert!((s.kv_cache_usage_mean.unwrap() - 0.3).abs() < 1e-12);
        // 10 first tokens in the cell, 2.8 s in all.
        assert!((s.server_ttft_ms_mean.unwrap() - 280.0).abs() < 1e-9, "{s:?}");
        // Growth per bucket: ≤0.1 s: 2, ≤0.5 s: 8, ≤+Inf: 10. The median (rank 5) lies
        // in the second bucket, 3/6 of the way: 0.1 + 0.4 × 0.5 = 0.3 s.
        assert!((s.server_ttft_ms.p50.unwrap() - 300.0).abs() < 1e-9, "{s:?}");
        // The 99th percentile falls in +Inf: its lower bound is all one can say.
        assert_eq!(s.server_ttft_ms.p99, Some(500.0));
        assert_eq!(s.counter_resets, 0);
        assert_eq!(s.mm_cache_hit_rate, None, "not exported, not invented");
    }

    #[test]
    fn a_counter_that_restarts_is_not_a_negative_delta() {
        assert_eq!(increase(&[(1, 100.0), (2, 150.0), (3, 20.0), (4, 30.0)]), (50.0 + 20.0 + 10.0, 1));
        let mut rows = scrape(1, 1000.0, 900.0, 0.0, [0.0; 3], 0.0);
        rows.extend(scrape(2, 40.0, 10.0, 0.0, [0.0; 3], 0.0));
        let s = summarize(&Scraped { rows, scrapes: 2, ..Default::default() }, None);
        let s = s.as_ref().unwrap();
        assert_eq!(s.prefix_cache_hit_rate, Some(0.25));
        assert!(s.counter_resets >= 2, "{s:?}");
    }

    #[test]
    fn no_answer_is_recorded_with_its_reason() {
        let s =
            summarize(&Scraped { failures: 1, first_failure: Some("GET /metrics answered HTTP 404".into()), ..Default::default() }, None);
        assert_eq!(s, Available::no("GET /metrics answered HTTP 404"));
        assert_eq!(parse("ok 1\nthis is { not \"prometheus\n", 0, &Secrets::default()), Err("cannot parse line 2".to_string()));
    }

    #[test]
    fn a_sample_that_is_not_a_finite_number_is_dropped_and_counted() {
        let text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\"} +Inf\nvllm:num_requests_waiting{engine=\"0\"} NaN\nvllm:kv_cache_usage_perc{engine=\"0\"} 1e999\nvllm:num_preemptions_total{engine=\"0\"} 1e308\n";
        let parsed = parse(text, 1, &Secrets::default()).unwrap();
        assert_eq!(parsed.non_finite, 3, "{parsed:?}");
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].value, 1e308, "a huge finite value is a value");
    }

    #[test]
    fn a_key_in_a_label_is_not_stored() {
        let text = "vllm:info{api_key=\"sk-canary0123456789abcdef\",args=\"--api-key mysecretvalue1\"} 1\n";
        let secrets = Secrets::new([("MY_KEY".to_string(), "mysecretvalue1".to_string())]);
        let rows = parse(text, 1, &secrets).unwrap().rows;
        assert_eq!(rows[0].labels, r#"api_key="sk-[redacted]",args="--api-key [redacted $MY_KEY]""#);
    }
}
