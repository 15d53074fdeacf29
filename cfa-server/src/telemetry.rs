//! Logs and traces.
//!
//! Logs are JSON lines when not on a terminal, human-readable otherwise; a JSON line written
//! inside a span carries that span's `trace_id` and `span_id`. Donor e-mail addresses reach logs
//! only through [`crate::domain::email::DonorEmail`], whose `Display` masks them; secrets only
//! through types that print `****`.
//!
//! Spans are OpenTelemetry spans (through tracing-opentelemetry), exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and kept
//! in-process otherwise (they still give log lines their ids and propagate `traceparent`). The
//! standard variables configure the rest: `OTEL_SERVICE_NAME` (default `careforall-<service>`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default:
//! parent-based, always on). The W3C `traceparent` travels with each outbox row, each message
//! and each queued e-mail: see `docs/OBSERVABILITY.md`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// The tracer provider, kept to flush it at shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes buffered spans and stops the exporter, waiting at most five seconds: an
    /// unreachable collector loses the last spans, never the shutdown.
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let (done, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || {
                let _ = done.send(provider.shutdown_with_timeout(FLUSH_BOUND));
            });
        if spawned.is_ok() {
            match finished.recv_timeout(FLUSH_BOUND + Duration::from_secs(1)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: traces not flushed at shutdown: {e}"),
                Err(_) => eprintln!("warning: the trace collector did not answer; spans dropped"),
            }
        }
    }
}

/// Whether an OTLP endpoint is configured in the environment.
pub fn exporting() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber: logs (`RUST_LOG`, when set, wins over `log.level`) and spans
/// for `service` (the metrics' `service` label). Fails only on a bad OTLP configuration.
pub fn init(settings: &LogSettings, service: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(format!("careforall-{service}"));
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "careforall.service",
            service.to_string(),
        ))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let exporting = exporting();
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP/HTTP exporter")?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    // Spans of this crate only, whatever the log level: traces do not depend on `log.level`.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cfa-server"))
        .with_filter(Targets::new().with_target("cfa_server", LevelFilter::INFO));
    // The log level filters events; this crate's spans always reach the formatter, so a warning
    // logged inside a request still carries the request's trace id when info lines are off.
    let filter = filter.or(filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("cfa_server")
    }));
    let registry = tracing_subscriber::registry()
        .with(otel)
        .with(TraceIdsLayer::default());
    let result = if json {
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(WithTraceIds(format))
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    };
    // A second init (tests, or a host that installed its own subscriber) keeps the first.
    if result.is_err() {
        return Ok(Telemetry { provider: None });
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The W3C `traceparent` of `span`, if it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The W3C `traceparent` of the current span, if it belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` (not yet entered) a child of the span `traceparent` names; a missing or
/// malformed value leaves it the root of a new trace.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// A span's OpenTelemetry ids, as log lines show them.
#[derive(Clone)]
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// Notes each span's trace and span ids when it is first entered (its parent is settled by
/// then), for the log formatter.
#[derive(Default)]
struct TraceIdsLayer {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let span_context = context.span().span_context().clone();
        if span_context.is_valid() {
            span.extensions_mut().insert(TraceIds {
                trace_id: span_context.trace_id().to_string(),
                span_id: span_context.span_id().to_string(),
            });
        }
    }
}

/// A JSON event format that starts each line written inside a span with its `trace_id` and
/// `span_id`.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.lookup_current().and_then(|current| {
            current
                .scope()
                .find_map(|span| span.extensions().get::<TraceIds>().cloned())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}
