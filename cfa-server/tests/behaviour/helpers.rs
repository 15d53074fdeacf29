//! `spawn_app()` and friends: the real server on port 0 with a fresh database per test.

use std::sync::Arc;
use std::time::Duration;

use cfa_server::config::Settings;
use cfa_server::messaging::bus::InProcessBus;
use cfa_server::messaging::relay::Relay;
use cfa_server::startup::Application;
use cfa_server::storage::Store;
use libtest_mimic::Failed;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Where a test's database lives.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the PostgreSQL server this admin URL reaches.
    Postgres(String),
    /// PostgreSQL as above, and RabbitMQ at this URL with names prefixed for the test.
    PostgresRabbit(String, String),
    /// PostgreSQL as above, and Redis at this URL with keys prefixed for the test.
    PostgresRedis(String, String),
    /// PostgreSQL, RabbitMQ and Redis, each as above.
    Stack(String, String, String),
}

/// What a test gets: a database of its own, and a way to start servers on it.
pub struct TestContext {
    /// The database URL every server of this test uses.
    pub database_url: String,
    /// The backend.
    pub backend: Backend,
    /// RabbitMQ URL and this test's name prefix, when the test runs on RabbitMQ.
    pub amqp: Option<(String, String)>,
    /// Redis URL and this test's key prefix, when the test runs with Redis.
    pub redis: Option<(String, String)>,
    data_dir: tempfile::TempDir,
}

/// Runs one test on one backend, with its own runtime and database.
pub fn run(backend: Backend, test: crate::TestFn) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?;
    runtime.block_on(async move {
        let data_dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (database_url, cleanup) = match &backend {
            Backend::Sqlite => (
                format!("sqlite://{}", data_dir.path().join("cfa.db").display()),
                None,
            ),
            Backend::Postgres(admin)
            | Backend::PostgresRabbit(admin, _)
            | Backend::PostgresRedis(admin, _)
            | Backend::Stack(admin, _, _) => {
                let (url, name) = create_pg_database(admin).await?;
                (url, Some((admin.clone(), name)))
            }
        };
        let amqp = match &backend {
            Backend::PostgresRabbit(_, url) | Backend::Stack(_, url, _) => {
                check_rabbit(url).await?;
                Some((url.clone(), format!("t{}.", uuid::Uuid::new_v4().simple())))
            }
            _ => None,
        };
        let redis = match &backend {
            Backend::PostgresRedis(_, url) | Backend::Stack(_, _, url) => {
                check_redis(url).await?;
                Some((url.clone(), format!("t{}:", uuid::Uuid::new_v4().simple())))
            }
            _ => None,
        };
        let ctx = TestContext {
            database_url,
            backend,
            amqp: amqp.clone(),
            redis,
            data_dir,
        };
        let outcome = tokio::spawn(test(ctx)).await;
        if let Some((admin, name)) = cleanup {
            drop_pg_database(&admin, &name).await;
        }
        if let Some((url, namespace)) = amqp {
            drop_rabbit_names(&url, &namespace).await;
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the test panicked".into());
                Err(Failed::from(message))
            }
            Err(e) => Err(Failed::from(format!("the test task failed: {e}"))),
        }
    })
}

async fn check_redis(url: &str) -> Result<(), String> {
    let fail =
        |e: String| format!("CFA_TEST_REDIS_URL is set but Redis cannot be reached at {url}: {e}");
    let client = redis::Client::open(url).map_err(|e| fail(e.to_string()))?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| fail(e.to_string()))?;
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

async fn check_rabbit(url: &str) -> Result<(), String> {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map(|_| ())
        .map_err(|e| {
            format!("CFA_TEST_AMQP_URL is set but RabbitMQ cannot be reached at {url}: {e}")
        })
}

/// Deletes the queues and exchanges a test created under its prefix.
async fn drop_rabbit_names(url: &str, namespace: &str) {
    let Ok(connection) =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    let topology = cfa_server::messaging::rabbit::Topology::new(namespace);
    for consumer in ["donation-status", "totals", "notifications", "flaky"] {
        for queue in [
            topology.queue(consumer),
            topology.retry_queue(consumer, 100),
            topology.retry_queue(consumer, 50),
            topology.dead_queue(consumer),
        ] {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
    for topic in ["donation", "payment"] {
        let _ = channel
            .exchange_delete(topology.exchange(topic).as_str().into(), Default::default())
            .await;
    }
}

fn pg_url_with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let without_db = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |p| p + 2) => &base[..i],
        _ => base,
    };
    format!("{without_db}/{name}{query}")
}

async fn create_pg_database(admin: &str) -> Result<(String, String), String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin).await.map_err(|e| {
        format!("CFA_TEST_POSTGRES_URL is set but PostgreSQL cannot be reached at {admin}: {e}")
    })?;
    let name = format!("cfa_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("creating test database {name}: {e}"))?;
    conn.close().await.ok();
    Ok((pg_url_with_database(admin, &name), name))
}

async fn drop_pg_database(admin: &str, name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        conn.close().await.ok();
    }
}

impl TestContext {
    /// Runs one statement on this test's database behind the server's back (to leave the state
    /// a crash or an older build left) and returns how many rows it changed.
    pub async fn execute_sql(&self, sql: &'static str) -> u64 {
        use sqlx::Connection as _;
        let done = if self.database_url.starts_with("sqlite:") {
            let mut connection = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("the test database opens");
            sqlx::query(sql)
                .execute(&mut connection)
                .await
                .map(|d| d.rows_affected())
        } else {
            let mut connection = sqlx::PgConnection::connect(&self.database_url)
                .await
                .expect("the test database opens");
            sqlx::query(sql)
                .execute(&mut connection)
                .await
                .map(|d| d.rows_affected())
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// This test's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().to_path_buf()
    }

    /// Settings for a test server: port 0, this test's database, the relay left to the test.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".parse().expect("address");
        settings.server.data_dir = self.data_dir.path().to_path_buf();
        settings.server.shutdown_grace_seconds = 5;
        settings.database.url.0 = self.database_url.clone();
        settings.database.max_connections = Some(8);
        settings.outbox.relay_enabled = false;
        settings.gateway.rate_limit.enabled = false;
        if let Some((url, namespace)) = &self.amqp {
            settings.amqp.url.0 = url.clone();
            settings.amqp.namespace = namespace.clone();
            settings.amqp.retry_delay_ms = 100;
        }
        if let Some((url, prefix)) = &self.redis {
            settings.redis.url.0 = url.clone();
            settings.redis.prefix = prefix.clone();
            settings.redis.timeout_ms = 500;
        }
        settings
    }

    /// A server with the test defaults.
    pub async fn spawn_app(&self) -> TestApp {
        self.spawn_app_with(|_| {}).await
    }

    /// A server whose settings the test adjusts first.
    pub async fn spawn_app_with(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings();
        configure(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("the application builds");
        let address = format!("http://{}", app.local_addr());
        let store = app.state().store.clone();
        let state = app.state().clone();
        let secret = app
            .state()
            .webhook_secrets
            .first()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let operator_key = app
            .state()
            .settings
            .auth
            .api_keys
            .first()
            .map(|k| k.expose().to_string());
        let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
        let relay = app.relay();
        let bus = app.bus();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            store,
            state,
            secret,
            operator_key,
            metrics_address,
            relay,
            bus,
            stop: Some(stop),
            server: Some(server),
        }
    }
}

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The server's store, for looking behind the API.
    pub store: Arc<dyn Store>,
    /// The server's shared state.
    pub state: cfa_server::http::AppState,
    /// The first webhook secret the server accepts.
    pub secret: String,
    /// The first operator key, when keys are configured (operator requests send it).
    pub operator_key: Option<String>,
    /// `http://ADDRESS` of the metrics listener, when `metrics.listen` is set.
    pub metrics_address: Option<String>,
    /// A relay on the server's store and bus, driven by hand.
    pub relay: Relay,
    /// The server's in-process bus.
    pub bus: Arc<InProcessBus>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Raw body.
    pub bytes: Vec<u8>,
    /// Body as JSON (`Null` if it is not JSON).
    pub json: Value,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body").to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            bytes,
            json,
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `code` of an error body.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// Sends a request with a JSON body and optional extra headers.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Reply::read(request.send().await.expect("the server answers")).await
    }

    /// Sends raw bytes with a content type.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Reply::read(request.send().await.expect("the server answers")).await
    }

    /// GET
    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    /// `/ready` after as many probes in a row as it takes for a backend that stopped answering to
    /// count as down.
    pub async fn ready_after_failed_probes(&self) -> Reply {
        let mut ready = self.get("/ready").await;
        for _ in 1..cfa_server::http::health::FAILURES_BEFORE_DOWN {
            ready = self.get("/ready").await;
        }
        ready
    }

    /// POST JSON
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    /// The `Authorization` header of an operator, when keys are configured.
    pub fn operator(&self) -> Vec<(&'static str, String)> {
        self.operator_key
            .iter()
            .map(|k| ("authorization", format!("Bearer {k}")))
            .collect()
    }

    /// Sends a JSON request as an operator (with the first key, when keys are configured).
    pub async fn send_as_operator(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let auth = self.operator();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.send(method, path, body, &headers).await
    }

    /// Creates an active USD campaign (as an operator) and returns its id.
    pub async fn create_campaign(&self, title: &str, goal: f64) -> String {
        let body = json!({"title": title, "goal_amount": goal});
        let reply = self
            .send_as_operator(reqwest::Method::POST, "/api/v1/campaigns", Some(&body))
            .await;
        assert_eq!(reply.status, 201, "campaign creation: {:?}", reply.json);
        reply.json["id"].as_str().expect("id").to_string()
    }

    /// Creates a donation and returns the reply.
    pub async fn donate(&self, campaign_id: &str, email: &str, amount: &str) -> Reply {
        let body = format!(
            r#"{{"campaign_id":"{campaign_id}","donor_email":"{email}","amount":{amount}}}"#
        );
        self.send_raw(
            reqwest::Method::POST,
            "/api/v1/donations",
            Some("application/json"),
            body.into_bytes(),
        )
        .await
    }

    /// Sends a webhook body signed with the server's secret (now).
    pub async fn webhook(&self, body: &str, headers: &[(&str, &str)]) -> Reply {
        let t = chrono::Utc::now().timestamp();
        let signature = cfa_server::services::payments::signature::header_value(
            &[&self.secret],
            t,
            body.as_bytes(),
        );
        let mut request = self
            .client
            .post(format!("{}/api/v1/payments/webhook", self.address))
            .header("content-type", "application/json")
            .header("cfa-signature", signature)
            .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Reply::read(request.send().await.expect("the server answers")).await
    }

    /// Delivers outbox batches by hand until the outbox is empty.
    pub async fn drain_outbox(&self) {
        for _ in 0..50 {
            let report = self.relay.deliver_batch().await.expect("deliver");
            if report.claimed == 0 {
                return;
            }
        }
        panic!("the outbox did not drain");
    }

    /// A campaign, a donation of `amount` and an intent for it; returns (donation id, intent).
    pub async fn pending_payment(&self, amount: &str) -> (String, Value) {
        let campaign = self.create_campaign("Payments", 100000.0).await;
        let donation = self.donate(&campaign, "payer@example.org", amount).await;
        assert_eq!(donation.status, 201, "{:?}", donation.json);
        let donation_id = donation.json["id"].as_str().expect("id").to_string();
        let body = format!(r#"{{"donation_id":"{donation_id}","amount":{amount}}}"#);
        let intent = self
            .send_raw(
                reqwest::Method::POST,
                "/api/v1/payments/intent",
                Some("application/json"),
                body.into_bytes(),
            )
            .await;
        assert_eq!(intent.status, 201, "{:?}", intent.json);
        (donation_id, intent.json)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
