//! Logs and metrics: the tracing subscriber and the process-wide Prometheus recorder.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::OnceLock;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the tracing subscriber: `RUST_LOG` filters (default `info`), `format` shapes.
/// A `RUST_LOG` that does not parse is refused rather than replaced by the default.
pub fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    let filter = log_filter(std::env::var_os(EnvFilter::DEFAULT_ENV).as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// The filter `RUST_LOG` (`value`) asks for; `info` when it is not set.
fn log_filter(value: Option<&OsStr>) -> anyhow::Result<EnvFilter> {
    let Some(value) = value else {
        return Ok(EnvFilter::new("info"));
    };
    let value = value
        .to_str()
        .context("RUST_LOG is not valid UTF-8; unset it or give a filter such as `info`")?;
    EnvFilter::try_new(value).with_context(|| {
        format!("RUST_LOG={value:?} is not a log filter; give one such as `info` or `api=debug`")
    })
}

/// The process-wide Prometheus recorder, installed on first use. Every router in the
/// process renders the same registry.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5,
                    ],
                )
                .expect("static bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // When another recorder is already global (an embedding program's), keep
            // rendering ours: /metrics then shows only what this handle sees.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::log_filter;

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused() {
        assert_eq!(log_filter(None).unwrap().to_string(), "info");
        assert_eq!(
            log_filter(Some(OsStr::new("api=debug")))
                .unwrap()
                .to_string(),
            "api=debug"
        );
        let err = log_filter(Some(OsStr::new("api=loud"))).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("RUST_LOG=\"api=loud\" is not a log filter"),
            "{err:#}"
        );
    }
}
