//! The load generator: an open-loop fixed arrival rate (latency measured from each
//! request's intended send time, so a slow server cannot hide its queueing: no coordinated
//! omission) and a closed-loop saturation mode (N clients, each sending its next request
//! when the previous one is answered).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use reqwest::header::CONTENT_TYPE;

use crate::workload::{Request, Workload, check};

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Open loop: this many requests per second, whatever the answers do.
    Rate(f64),
    /// Closed loop: this many concurrent clients, as fast as answers come.
    Saturate(usize),
}

impl Mode {
    /// `100/s` or `c=16`.
    pub fn label(self) -> String {
        match self {
            Mode::Rate(r) => format!("{r}/s"),
            Mode::Saturate(c) => format!("sat c={c}"),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Requests answered (successfully or not).
    pub requests: u64,
    /// Requests that failed (transport, HTTP status, GraphQL errors, wrong answer).
    pub errors: u64,
    /// Seconds from the first intended send to the last answer.
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Mean latency, milliseconds.
    #[serde(default)]
    pub mean_ms: f64,
    /// Latency percentiles and maximum, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Open loop only: 99th percentile of how late the generator sent (its own lag).
    pub send_lag_p99_ms: Option<f64>,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

struct Recorder {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
        Recorder {
            latency: h(),
            lag: h(),
            requests: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        self.requests += 1;
        self.latency.saturating_record(micros(latency));
        if let Err(e) = outcome {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(e);
            }
        }
    }

    fn stats(&self, elapsed: Duration, open_loop: bool) -> Stats {
        let ms = |us: u64| us as f64 / 1000.0;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Stats {
            requests: self.requests,
            errors: self.errors,
            elapsed_s: secs,
            throughput: (self.requests - self.errors) as f64 / secs,
            mean_ms: self.latency.mean() / 1000.0,
            p50_ms: ms(self.latency.value_at_quantile(0.50)),
            p95_ms: ms(self.latency.value_at_quantile(0.95)),
            p99_ms: ms(self.latency.value_at_quantile(0.99)),
            max_ms: ms(self.latency.max()),
            send_lag_p99_ms: open_loop.then(|| ms(self.lag.value_at_quantile(0.99))),
            first_error: self.first_error.clone(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Sends `workload`'s requests to `url` in `mode` for `duration`; returns what it measured.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    workload: &mut Workload,
    mode: Mode,
    duration: Duration,
) -> Stats {
    match mode {
        Mode::Rate(rate) => open_loop(client, url, workload, rate, duration).await,
        Mode::Saturate(clients) => closed_loop(client, url, workload, clients, duration).await,
    }
}

/// Sends one request; returns when the whole answer has been read and checked.
async fn send(client: &reqwest::Client, url: &str, request: Request) -> Result<(), String> {
    let mut post = client.post(url).header(CONTENT_TYPE, "application/json");
    if let Some(token) = &request.bearer {
        post = post.bearer_auth(token);
    }
    let response = post
        .body(request.body.clone())
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    check(&request, status, &body)
}

async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    workload: &mut Workload,
    rate: f64,
    duration: Duration,
) -> Stats {
    let total = (duration.as_secs_f64() * rate).round().max(1.0) as u64;
    let start = Instant::now() + Duration::from_millis(5);
    let intended = move |k: u64| start + Duration::from_secs_f64(k as f64 / rate);
    // The pacer is a plain thread: tokio's timer rounds every sleep up to the next whole
    // millisecond, which would add up to 1 ms of the generator's own lateness to every
    // latency measured from the intended send time. A thread sleep is accurate to tens of
    // microseconds and costs no CPU while it waits; but handing the tick to the runtime
    // thread wakes that thread, which on an idle VM took up to 0.4 ms (p99). So the pacer
    // hands each tick over `LEAD` early, and the request waits out the rest by yielding
    // (a short spin that lets answers to other requests through), then sends on time.
    const LEAD: Duration = Duration::from_micros(500);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || {
        for k in 0..total {
            let at = intended(k);
            let now = Instant::now();
            if at > now + LEAD {
                std::thread::sleep(at - LEAD - now);
            }
            if tx.send(at).is_err() {
                break;
            }
        }
    });
    let mut recorder = Recorder::new();
    let mut inflight = FuturesUnordered::new();
    let mut ticks_open = true;
    loop {
        tokio::select! {
            biased;
            Some((at, lag, outcome)) = inflight.next() => {
                let at: Instant = at;
                recorder.record(Instant::now().duration_since(at), outcome);
                recorder.lag.saturating_record(micros(lag));
            }
            tick = rx.recv(), if ticks_open => match tick {
                Some(at) => {
                    let request = workload.next_request();
                    inflight.push(async move {
                        while Instant::now() < at {
                            tokio::task::yield_now().await;
                        }
                        let lag = Instant::now().duration_since(at);
                        (at, lag, send(client, url, request).await)
                    });
                }
                None => ticks_open = false,
            },
            else => break,
        }
    }
    let _ = pacer.join();
    recorder.stats(Instant::now().duration_since(start), true)
}

async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    workload: &mut Workload,
    clients: usize,
    duration: Duration,
) -> Stats {
    let start = Instant::now();
    let end = start + duration;
    let recorder = RefCell::new(Recorder::new());
    let workload = RefCell::new(workload);
    let worker = || async {
        while Instant::now() < end {
            let request = workload.borrow_mut().next_request();
            let sent = Instant::now();
            let outcome = send(client, url, request).await;
            recorder.borrow_mut().record(sent.elapsed(), outcome);
        }
    };
    futures::future::join_all((0..clients.max(1)).map(|_| worker())).await;
    let elapsed = start.elapsed();
    recorder.into_inner().stats(elapsed, false)
}
