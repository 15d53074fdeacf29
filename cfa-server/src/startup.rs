//! Building and running the application: [`Application::build`] connects the store, applies
//! migrations and binds the listener; [`Application::run_until_stopped`] serves until the
//! shutdown future resolves, then drains in-flight requests and stops the background tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{MailSender, Role, Secret, Settings};
use crate::http::{self, AppParts, AppState};
use crate::idempotency::InFlightGate;
use crate::idempotency::Replays;
use crate::messaging::bus::{Delivery, EventBus, InProcessBus};
use crate::messaging::consumer::{self, Handler};
use crate::messaging::rabbit::{self, RabbitBus};
use crate::messaging::relay::Relay;
use crate::redis_cache::FastPath;
use crate::services::notifications::{
    FileMailer, HistoryLinks, Mailer, NoticePolicy, Sender, SmtpMailer,
};
use crate::services::payments::provider::PaymentProvider;
use crate::services::payments::sandbox::Sandbox;
use crate::services::payments::{ReconcileStats, Reconciler};
use crate::services::totals::{LocalCache, TotalsCache, TwoLevelCache};
use crate::services::{CONSUMERS, ConsumerDeps};
use crate::storage::{self, Store};

/// A consumer and, on the in-process bus, the channel it reads (RabbitMQ consumers read their
/// queue instead).
type ConsumerSlot = (
    Arc<dyn Handler>,
    Option<tokio::sync::mpsc::Receiver<Delivery>>,
);

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    /// `metrics.listen`, when `/metrics` has a listener of its own.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    /// The store the event pipeline works through: the pipeline's own connections where the
    /// store has them ([`Store::pipeline`]), else the requests' store.
    pipeline: Arc<dyn Store>,
    bus: Arc<InProcessBus>,
    consumers: Vec<ConsumerSlot>,
}

/// The webhook secrets to verify with: the configured ones, or the one kept in
/// `<data_dir>/webhook_secret`, generated on first start.
fn webhook_secrets(settings: &Settings) -> anyhow::Result<Vec<Secret>> {
    if !settings.payments.webhook_secret.is_empty() {
        return Ok(settings.payments.webhook_secret.clone());
    }
    let secret = kept_secret(
        settings,
        "webhook_secret",
        "whsec_",
        "no payments.webhook_secret configured: generated one; read it with `cat {}` and give it to the payment provider",
    )?;
    Ok(vec![secret])
}

/// A secret kept in `<data_dir>/<name>`, generated (and announced with `message`, where `{}`
/// is the path) on first use.
fn kept_secret(
    settings: &Settings,
    name: &str,
    prefix: &str,
    message: &str,
) -> anyhow::Result<Secret> {
    let path = settings.data_dir().join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(Secret::from(existing));
        }
    }
    crate::files::private_dir(settings.data_dir()).with_context(|| {
        format!(
            "cannot create the data directory {}",
            settings.data_dir().display()
        )
    })?;
    let secret = format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()));
    crate::files::write_new_private(&path, secret.as_bytes())
        .with_context(|| format!("cannot write the generated secret to {}", path.display()))?;
    tracing::warn!(path = %path.display(), "{}", message.replace("{}", &path.display().to_string()));
    Ok(Secret::from(secret.as_str()))
}

/// This server's own base URL (`http://127.0.0.1:8000`), for the sandbox's webhooks and the
/// links in receipts when nothing else is configured.
fn own_url(listener: &TcpListener, settings: &Settings) -> String {
    let mut addr = listener.local_addr().unwrap_or(settings.server.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// The sandbox provider, when it is on in a process of the payment role; its webhooks go to the
/// configured URL, or to this server's own endpoint.
fn sandbox(
    settings: &Settings,
    store: &Arc<dyn Store>,
    secrets: &[Secret],
    own_url: &str,
) -> Option<Arc<Sandbox>> {
    if !(settings.payments.sandbox_on() && settings.server.runs(Role::Payment)) {
        return None;
    }
    let url = match settings.payments.sandbox_webhook_url.trim() {
        "" => format!("{own_url}/api/v1/payments/webhook"),
        url => url.to_string(),
    };
    let payments = settings.payments.clone();
    Some(Arc::new(Sandbox::new(
        store.clone(),
        payments,
        secrets.to_vec(),
        url,
    )))
}

/// Where notifications go: the file sink or SMTP.
fn mailer(settings: &Settings) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match settings.notifications.sender {
        MailSender::File => Arc::new(FileMailer::new(settings.data_dir().join("mail"))),
        MailSender::Smtp => Arc::new(SmtpMailer::new(&settings.notifications)?),
    })
}

/// Signs donor history links with the configured secret, or the one kept in the data directory.
fn history_links(settings: &Settings, own_url: String) -> anyhow::Result<HistoryLinks> {
    let notifications = &settings.notifications;
    let secret = match &notifications.history_link_secret {
        Some(secret) if !secret.expose().trim().is_empty() => secret.clone(),
        _ => kept_secret(
            settings,
            "history_link_secret",
            "hl_",
            "generated the secret that signs donor history links in {}",
        )?,
    };
    let base_url = match notifications.public_base_url.trim() {
        "" => own_url,
        url => url.to_string(),
    };
    let ttl_hours = i64::try_from(notifications.history_link_ttl_hours).unwrap_or(2160);
    Ok(HistoryLinks::new(
        secret,
        chrono::TimeDelta::hours(ttl_hours),
        base_url,
    ))
}

/// The API's listener and, with `metrics.listen`, the metrics listener.
async fn bind(settings: &Settings) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let listen = settings.server.listen;
    let api = TcpListener::bind(listen).await.with_context(|| {
        format!(
            "cannot listen on {listen} (server.listen / CFA_LISTEN); is another server running there?"
        )
    })?;
    let metrics = match settings.metrics.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (metrics.listen / CFA_METRICS__LISTEN)")
        })?),
        None => None,
    };
    Ok((api, metrics))
}

/// Redis, if configured, and the totals cache.
type Caches = (Option<Arc<FastPath>>, Arc<dyn TotalsCache>);

/// Redis, if configured, and the totals cache in front of the read model (two levels with
/// Redis, in-process only without).
fn caches(settings: &Settings) -> anyhow::Result<Caches> {
    let ttl = Duration::from_secs(settings.totals.cache_ttl_seconds);
    if !settings.redis.enabled() {
        return Ok((None, Arc::new(LocalCache::new(ttl))));
    }
    let redis = FastPath::new(&settings.redis)?;
    let cache = Arc::new(TwoLevelCache::new(redis.clone(), ttl));
    Ok((Some(redis), cache))
}

/// Where saved responses of idempotent requests are looked up first (Redis, when configured)
/// and how long they are kept.
fn replays(settings: &Settings, fast: Option<Arc<FastPath>>) -> Replays {
    Replays {
        fast,
        retention: Duration::from_secs(settings.idempotency.retention_hours.saturating_mul(3600)),
    }
}

/// The consumers of this process's roles, from the consumer table; on the in-process bus each
/// is subscribed now (a RabbitMQ consumer reads its queue once running).
fn consumers(settings: &Settings, bus: &InProcessBus, deps: &ConsumerDeps) -> Vec<ConsumerSlot> {
    CONSUMERS
        .iter()
        .filter(|spec| settings.server.runs(spec.role))
        .map(|spec| {
            let handler = (spec.build)(deps);
            let deliveries =
                (!settings.amqp.enabled()).then(|| bus.subscribe(spec.name, spec.topics));
            (handler, deliveries)
        })
        .collect()
}

impl Application {
    /// Connects to the database (applying migrations if configured) and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // HTTP clients (gateway, sandbox) may be built with TLS: one provider for the process,
        // whichever binary embeds us (installing twice is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = storage::connect(
            &settings.database,
            settings.data_dir(),
            settings.database.migrate_on_start,
        )
        .await?;
        Self::build_with_store(settings, store).await
    }

    /// Like [`Application::build`], on a store the caller opened.
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Application> {
        let (listener, metrics_listener) = bind(&settings).await?;
        let pipeline = store.pipeline().unwrap_or_else(|| store.clone());
        let bus = Arc::new(InProcessBus::default());
        let secrets = webhook_secrets(&settings)?;
        let own_url = own_url(&listener, &settings);
        let sandbox = sandbox(&settings, &pipeline, &secrets, &own_url);
        let history_links = history_links(&settings, own_url)?;
        let mailer = mailer(&settings)?;
        let mail_wake = Arc::new(Notify::new());
        let (redis, totals_cache) = caches(&settings)?;
        let replays = replays(&settings, redis);
        let relay_bus: Arc<dyn EventBus> = if !settings.amqp.enabled() {
            bus.clone()
        } else {
            Arc::new(RabbitBus::new(&settings.amqp))
        };
        let live = Arc::new(crate::services::live::LiveTotals::default());
        let deps = ConsumerDeps {
            store: pipeline.clone(),
            totals_cache: totals_cache.clone(),
            live: live.clone(),
            history_links: history_links.clone(),
            mail_wake: mail_wake.clone(),
            notice_policy: NoticePolicy {
                max_per_recipient_per_hour: settings.notifications.max_per_recipient_per_hour,
                sandbox_failures: settings.notifications.sender == MailSender::File,
            },
        };
        let consumers = consumers(&settings, &bus, &deps);
        let limits = crate::gateway::limits::RateLimits::new(
            &settings.gateway.rate_limit,
            &settings.auth.api_keys,
            settings.gateway.trusted_networks()?,
        );
        let gateway =
            (settings.server.runs(Role::Gateway) && !settings.server.all_in_one()).then(|| {
                crate::gateway::Gateway::new(&settings.gateway, settings.server.body_limit_bytes)
            });
        let consumer_names: Vec<&'static str> = CONSUMERS.iter().map(|c| c.name).collect();
        let admission = crate::http::admission::Admission::new(&settings);
        let state = AppState::new(AppParts {
            store,
            settings: Arc::new(settings),
            gate: Arc::new(InFlightGate::default()),
            outbox_wake: Arc::new(Notify::new()),
            bus: relay_bus.clone(),
            consumers: Arc::new(consumer_names),
            limits,
            gateway,
            replays,
            provider: sandbox.clone().map(|s| s as Arc<dyn PaymentProvider>),
            sandbox,
            webhook_secrets: Arc::new(secrets),
            reconcile: Arc::new(ReconcileStats::default()),
            totals_cache,
            live,
            history_links,
            mailer,
            mail_wake,
            admission,
            readiness: Arc::default(),
            currencies: Arc::default(),
        });
        crate::metrics::register(
            &state.settings.server,
            state.provider.as_ref().map_or("sandbox", |p| p.name()),
        );
        Ok(Application {
            listener,
            metrics_listener,
            state,
            pipeline,
            bus,
            consumers,
        })
    }

    /// The address `/metrics` is served on when it has a listener of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.settings.server.listen)
    }

    /// The shared state, for tests and embedding.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The in-process bus, so embedded consumers (and tests) can subscribe before the relay runs.
    pub fn bus(&self) -> Arc<InProcessBus> {
        self.bus.clone()
    }

    /// A notification sender over this application's store and mailer, for driving by hand.
    pub fn sender(&self) -> Sender {
        Sender::new(
            self.pipeline.clone(),
            self.state.mailer.clone(),
            self.state.settings.notifications.clone(),
            self.state.mail_wake.clone(),
        )
    }

    /// A relay over this application's store and bus, for driving by hand.
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.pipeline.clone(),
            self.state.bus.clone(),
            self.state.settings.outbox.clone(),
        )
    }

    /// Starts the background work of this process's roles: relay, sweeper, consumers, sandbox
    /// deliveries, notification sender, reconciliation, gateway health checks, rate-limit upkeep.
    fn spawn_background(&mut self, tasks: &TaskTracker, cancel: &CancellationToken) {
        let settings = self.state.settings.clone();
        let runs = |role| settings.server.runs(role);
        if settings.outbox.relay_enabled && runs(Role::Relay) {
            let wake = self.state.outbox_wake.clone();
            tasks.spawn(self.relay().run(wake, cancel.clone()));
        }
        let store = self.pipeline.clone();
        if let Some(watch) = self
            .state
            .admission
            .watch_pipeline(store.clone(), cancel.clone())
        {
            tasks.spawn(watch);
        }
        tasks.spawn(sweep(store, settings.clone(), cancel.clone()));
        for (handler, deliveries) in std::mem::take(&mut self.consumers) {
            match deliveries {
                Some(deliveries) => tasks.spawn(consumer::run(handler, deliveries, cancel.clone())),
                None => tasks.spawn(rabbit::run_consumer(
                    settings.amqp.clone(),
                    handler,
                    cancel.clone(),
                )),
            };
        }
        if let Some(sandbox) = &self.state.sandbox {
            tasks.spawn(sandbox.clone().run(cancel.clone()));
        }
        if runs(Role::Notification) {
            tasks.spawn(self.sender().run(cancel.clone()));
        }
        if let Some(provider) = &self.state.provider {
            let reconciler = Reconciler::new(
                self.pipeline.clone(),
                provider.clone(),
                self.state.reconcile.clone(),
                Duration::from_secs(settings.payments.reconcile_after_seconds),
            )
            .with_refund_expiry(Duration::from_secs(settings.payments.refund_expiry_seconds));
            tasks.spawn(reconciler.run(
                Duration::from_secs(settings.payments.reconcile_interval_seconds),
                self.state.outbox_wake.clone(),
                cancel.clone(),
            ));
        }
        if let Some(gateway) = self.state.gateway.clone() {
            tasks.spawn(gateway.check_health(cancel.clone()));
        }
        if let Some(listener) = self.metrics_listener.take() {
            let metrics = http::metrics::router(self.state.clone());
            let stopped = cancel.clone().cancelled_owned();
            tasks.spawn(async move {
                let served = axum::serve(listener, metrics).with_graceful_shutdown(stopped);
                if let Err(e) = served.await {
                    tracing::warn!(error = %e, "the metrics listener stopped");
                }
            });
        }
        if let Some(limits) = self.state.limits.clone() {
            let cancel = cancel.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => limits.shrink(),
                    }
                }
            });
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting, drains in-flight requests (up to
    /// `server.shutdown_grace_seconds`), stops the relay and the sweeper, and closes the store.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let settings = self.state.settings.clone();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        self.spawn_background(&tasks, &cancel);
        tasks.close();

        let addr = self.local_addr();
        let store = self.state.store.clone();
        let readiness = self.state.readiness.clone();
        let live = self.state.live.clone();
        let app = http::app(self.state);
        let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
        let stopping = CancellationToken::new();
        let stop_signal = stopping.clone();
        let limits = http::serve::ConnectionLimits {
            header_read_timeout: Duration::from_secs(settings.server.header_read_timeout_seconds),
            max_connections: settings.server.max_connections,
        };
        let delay = Duration::from_secs(settings.server.shutdown_delay_seconds);
        let server = http::serve::serve(self.listener, app, limits, async move {
            shutdown.await;
            // From here until the process exits, /ready says `draining`.
            readiness.start_draining();
            if !delay.is_zero() {
                tracing::info!(%addr, delay_seconds = delay.as_secs(), "shutting down: /ready answers draining; still accepting while load balancers notice");
                tokio::time::sleep(delay).await;
            }
            tracing::info!(%addr, "shutting down: no new connections, draining requests");
            // Open totals streams would keep their connections (and the drain) waiting.
            live.close();
            stop_signal.cancel();
        });
        let served = tokio::spawn(server);
        let result = tokio::select! {
            result = served => result.context("the HTTP server task failed"),
            _ = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_seconds = grace.as_secs(), "requests still running after the grace period; stopping anyway");
                Ok(())
            }
        };
        cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(15), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within 15 s; leaving them");
        }
        if tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy after 5 s; closing anyway");
        }
        tracing::info!("stopped");
        result
    }
}

/// Deletes expired idempotency keys and delivered outbox rows past their retention.
async fn sweep(store: Arc<dyn Store>, settings: Arc<Settings>, cancel: CancellationToken) {
    let every = Duration::from_secs(settings.idempotency.sweep_interval_seconds);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = crate::domain::now();
        let keys_before = now - hours(settings.idempotency.retention_hours);
        let outbox_before = now - hours(settings.outbox.retention_hours);
        match store.sweep_idempotency(keys_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "swept expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "sweeping idempotency keys failed"),
        }
        match store.prune_outbox(outbox_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned delivered outbox rows"),
            Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
        }
    }
}

fn hours(h: u64) -> chrono::TimeDelta {
    chrono::TimeDelta::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
