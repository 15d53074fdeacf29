//! deploy/compose.yaml, run without a container engine: for a profile, every cfa-server service
//! the profile starts gets exactly the environment and command the compose file gives it
//! (variables filled in from deploy/.env.example, the image's own `ENV` underneath), with only
//! the addresses moved onto this machine: the compose hosts become 127.0.0.1 on ports of their
//! own, the backends become this test's PostgreSQL database, RabbitMQ name prefix and Redis key
//! prefix, mailpit becomes an SMTP sink. Each service's configuration passes
//! `cfa-server config check`, the `migrate` service runs to completion, the others start as
//! separate processes, and a donor journey through the service that publishes :8000 ends with
//! the donation completed, counted in the totals and a receipt in the mailbox.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;

use crate::helpers::{TestContext, eventually};
use crate::smtp::SmtpSink;
use crate::tests;

tests![stack:
    the_compose_all_in_one_profile_takes_a_donation_from_start_to_receipt,
    the_compose_split_profile_takes_a_donation_from_start_to_receipt,
];

async fn the_compose_all_in_one_profile_takes_a_donation_from_start_to_receipt(ctx: TestContext) {
    run_profile(&ctx, "all-in-one", 1).await;
}

async fn the_compose_split_profile_takes_a_donation_from_start_to_receipt(ctx: TestContext) {
    // gateway, two donation replicas, payment, totals, notification, two relays.
    run_profile(&ctx, "split", 8).await;
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// One cfa-server service of the compose file, its variables filled in.
struct Service {
    name: String,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    /// Host ports it publishes.
    published: Vec<String>,
}

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// Compose's variable substitution: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
/// `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`.
fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
            let expression = &after[..end];
            rest = &after[end + 1..];
            let split = expression.find([':', '-', '?']).unwrap_or(expression.len());
            let (name, operator) = expression.split_at(split);
            let value = vars.get(name).cloned();
            let set = value.clone().filter(|v| !v.is_empty());
            out.push_str(&match operator {
                "" => value.unwrap_or_default(),
                o if o.starts_with(":-") => set.unwrap_or_else(|| o[2..].to_string()),
                o if o.starts_with('-') => value.unwrap_or_else(|| o[1..].to_string()),
                o if o.starts_with(":?") => {
                    set.unwrap_or_else(|| panic!("{name} is unset: {}", &o[2..]))
                }
                o if o.starts_with('?') => value.unwrap_or_else(|| panic!("{name}: {}", &o[1..])),
                o => panic!("unknown substitution {o} in {text}"),
            });
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(vars.get(&rest[..end]).map_or("", String::as_str));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The `ENV` of the image's last stage: what a container has before compose adds its own.
fn image_environment() -> BTreeMap<String, String> {
    let dockerfile = std::fs::read_to_string(repository().join("cfa-server/Dockerfile"))
        .expect("cfa-server/Dockerfile");
    let last_stage = dockerfile.rsplit_once("\nFROM ").expect("a FROM line").1;
    last_stage
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(str::split_whitespace)
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The cfa-server services (those built from cfa-server/Dockerfile) that `profile` starts.
fn services(profile: &str) -> Vec<Service> {
    let root = repository();
    let vars = env_file(&root.join("deploy/.env.example"));
    let text = std::fs::read_to_string(root.join("deploy/compose.yaml")).expect("compose.yaml");
    let mut compose: Yaml = serde_yaml_ng::from_str(&text).expect("compose.yaml is YAML");
    // Each pass resolves one level of `<<:` (a merged mapping may merge another).
    for _ in 0..4 {
        compose.apply_merge().expect("merge keys");
    }
    let image = image_environment();
    let mut found = Vec::new();
    for (name, service) in compose["services"].as_mapping().expect("services") {
        let name = scalar(name);
        if service["build"]["dockerfile"].as_str() != Some("cfa-server/Dockerfile") {
            continue;
        }
        let profiles: Vec<String> = service["profiles"]
            .as_sequence()
            .map(|p| p.iter().map(scalar).collect())
            .unwrap_or_default();
        if !profiles.is_empty() && !profiles.iter().any(|p| p == profile) {
            continue;
        }
        let mut environment = image.clone();
        for (k, v) in service["environment"]
            .as_mapping()
            .expect("an environment mapping")
        {
            let key = scalar(k);
            assert_ne!(key, "<<", "{name}: an unresolved merge key");
            environment.insert(key, interpolate(&scalar(v), &vars));
        }
        let command = service["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}: command as a list"))
            .iter()
            .map(|a| interpolate(&scalar(a), &vars))
            .collect();
        let published = service["ports"]
            .as_sequence()
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| interpolate(&scalar(p), &vars))
                    .collect()
            })
            .unwrap_or_default();
        found.push(Service {
            name,
            command,
            environment,
            published,
        });
    }
    found
}

/// Ports below the ephemeral range, held together so they are distinct (see split.rs).
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Rewrites the compose addresses of every service onto this machine and this test's backends.
fn localise(services: &mut [Service], ctx: &TestContext, smtp_port: u16) {
    let ports = free_ports(services.len() * 2);
    // `name:port` as the other containers reach a service → 127.0.0.1 and a port of its own.
    let mut hosts = BTreeMap::new();
    for (i, service) in services.iter_mut().enumerate() {
        let listen = service.environment["CFA_LISTEN"].clone();
        let port = listen.rsplit_once(':').expect("CFA_LISTEN host:port").1;
        hosts.insert(format!("{}:{port}", service.name), ports[2 * i]);
        service
            .environment
            .insert("CFA_LISTEN".into(), format!("127.0.0.1:{}", ports[2 * i]));
        if service.environment.contains_key("CFA_METRICS__LISTEN") {
            service.environment.insert(
                "CFA_METRICS__LISTEN".into(),
                format!("127.0.0.1:{}", ports[2 * i + 1]),
            );
        }
    }
    let (amqp_url, namespace) = ctx.amqp.clone().expect("RabbitMQ");
    let (redis_url, prefix) = ctx.redis.clone().expect("Redis");
    for service in services.iter_mut() {
        let env = &mut service.environment;
        for (key, compose_host, local) in [
            (
                "CFA_DATABASE_URL",
                "@postgres:5432/",
                ctx.database_url.clone(),
            ),
            ("CFA_AMQP_URL", "@rabbitmq:5672/", amqp_url.clone()),
            ("CFA_REDIS_URL", "@redis:6379/", redis_url.clone()),
        ] {
            let value = env.get(key).cloned().unwrap_or_default();
            assert!(
                value.contains(compose_host),
                "{}: {key} should reach the compose backend ({compose_host}): {value:?}",
                service.name
            );
            env.insert(key.into(), local);
        }
        assert!(!env.contains_key("CFA_AMQP__NAMESPACE") && !env.contains_key("CFA_REDIS__PREFIX"));
        env.insert("CFA_AMQP__NAMESPACE".into(), namespace.clone());
        env.insert("CFA_REDIS__PREFIX".into(), prefix.clone());
        assert_eq!(
            env.get("CFA_NOTIFICATIONS__SMTP_HOST").map(String::as_str),
            Some("mailpit")
        );
        env.insert("CFA_NOTIFICATIONS__SMTP_HOST".into(), "127.0.0.1".into());
        env.insert("CFA_NOTIFICATIONS__SMTP_PORT".into(), smtp_port.to_string());
        // The image's /var/lib/cfa is a tmpfs in compose; here a directory per service.
        env.insert(
            "CFA_DATA_DIR".into(),
            ctx.data_dir().join(&service.name).display().to_string(),
        );
        // Eight processes next to the rest of the suite: stay well inside max_connections.
        env.insert("CFA_DATABASE__MAX_CONNECTIONS".into(), "4".into());
        env.insert("CFA_DATABASE__PIPELINE_CONNECTIONS".into(), "2".into());
        for value in env.values_mut() {
            for (host, port) in &hosts {
                *value = value.replace(&format!("//{host}"), &format!("//127.0.0.1:{port}"));
            }
        }
        for (key, value) in env.iter() {
            for other in ["postgres", "rabbitmq", "redis", "mailpit", "jaeger"]
                .into_iter()
                .chain(
                    hosts
                        .keys()
                        .map(|h| h.split(':').next().unwrap_or_default()),
                )
            {
                assert!(
                    !value.contains(&format!("//{other}:"))
                        && !value.contains(&format!("@{other}:")),
                    "{}: {key} still names the compose host {other}: {value}",
                    service.name
                );
            }
        }
    }
}

use crate::split::Processes;

fn command(service: &Service, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cfa-server"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&service.environment)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// `run …` and `migrate …` checked as `config check …` with the same options.
fn config_check(service: &Service, secrets: &[&str]) {
    let mut args = vec!["config".to_string(), "check".to_string()];
    args.extend(service.command.iter().skip(1).cloned());
    let output = command(service, &args)
        .output()
        .expect("cfa-server config check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}: `cfa-server {}` fails:\n{}{}",
        service.name,
        args.join(" "),
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    for secret in secrets {
        assert!(
            !stdout.contains(secret),
            "{}: a secret is printed:\n{stdout}",
            service.name
        );
    }
}

async fn run_profile(ctx: &TestContext, profile: &str, expected_servers: usize) {
    let vars = env_file(&repository().join("deploy/.env.example"));
    let sink = SmtpSink::start(0).await;
    let mut services = services(profile);
    localise(&mut services, ctx, sink.port);
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains("migrate"),
        "the one-shot migration is in every profile: {names:?}"
    );

    let secrets: Vec<&str> = [
        "CFA_WEBHOOK_SECRET",
        "CFA_HISTORY_LINK_SECRET",
        "CFA_API_KEYS",
    ]
    .iter()
    .map(|k| vars[*k].as_str())
    .collect();
    for service in &services {
        config_check(service, &secrets);
    }
    let migrate = services
        .iter()
        .find(|s| s.name == "migrate")
        .expect("migrate");
    let output = command(migrate, &migrate.command)
        .output()
        .expect("migrate runs");
    assert!(
        output.status.success(),
        "the migrate service fails:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let servers: Vec<&Service> = services.iter().filter(|s| s.name != "migrate").collect();
    assert_eq!(
        servers.len(),
        expected_servers,
        "the {profile} profile's processes: {names:?}"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let processes = start(ctx, &servers, &client).await;
    let entry: Vec<&&Service> = servers
        .iter()
        .filter(|s| s.published.iter().any(|p| p.ends_with(":8000:8000")))
        .collect();
    assert_eq!(entry.len(), 1, "exactly one service publishes :8000");
    let base = format!("http://{}", entry[0].environment["CFA_LISTEN"]);
    let key = vars["CFA_API_KEYS"]
        .split(',')
        .next()
        .expect("a key")
        .trim()
        .to_string();
    donor_journey(&client, &base, &key, &sink).await;
    drop(processes);
}

/// Starts each service's process and waits until every one is ready.
async fn start(ctx: &TestContext, servers: &[&Service], client: &reqwest::Client) -> Processes {
    let mut processes = Processes {
        children: Vec::new(),
        logs: ctx.data_dir(),
    };
    for service in servers {
        let log = std::fs::File::create(ctx.data_dir().join(format!("{}.log", service.name)))
            .expect("log file");
        let child = command(service, &service.command)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn");
        processes.children.push((service.name.clone(), child));
    }
    for service in servers {
        let url = format!("http://{}/ready", service.environment["CFA_LISTEN"]);
        eventually(
            Duration::from_secs(60),
            &format!("{} to be ready", service.name),
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let reply = client.get(url).send().await.ok()?;
                    reply.status().is_success().then_some(())
                }
            },
        )
        .await;
    }
    processes
}

async fn donor_journey(client: &reqwest::Client, base: &str, key: &str, sink: &SmtpSink) {
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
    };
    let reply = post(
        "/api/v1/campaigns",
        json!({"title": "Compose", "goal_amount": 500}),
    )
    .await
    .expect("campaign");
    assert_eq!(reply.status(), 201);
    let campaign: Value = reply.json().await.expect("json");
    let campaign = campaign["id"].as_str().expect("id").to_string();
    donor_page_is_served(client, base, &campaign).await;
    let email = "compose.donor@example.org";
    let reply = post(
        "/api/v1/donations",
        json!({"campaign_id": campaign, "donor_email": email, "amount": 25}),
    )
    .await
    .expect("donation");
    assert_eq!(reply.status(), 201);
    let donation: Value = reply.json().await.expect("json");
    let donation = donation["id"].as_str().expect("id").to_string();
    let reply = post(
        "/api/v1/payments/intent",
        json!({"donation_id": donation, "amount": 25}),
    )
    .await
    .expect("intent");
    assert_eq!(reply.status(), 201);
    let intent: Value = reply.json().await.expect("json");
    let intent = intent["payment_intent_id"]
        .as_str()
        .expect("intent id")
        .to_string();
    let reply = post(
        &format!("/sandbox/v1/intents/{intent}/confirm"),
        json!({"outcome": "succeed"}),
    )
    .await
    .expect("confirm");
    assert_eq!(reply.status(), 202);
    completed_with_receipt(client, base, key, &campaign, &donation, email, sink).await;
}

/// The campaign's donor page and its stylesheet answer on the published port: through the
/// gateway in the split profile, which sends pages to the payment service that serves them.
async fn donor_page_is_served(client: &reqwest::Client, base: &str, campaign: &str) {
    for (path, kind, text) in [
        (format!("/campaigns/{campaign}"), "text/html", "Compose"),
        ("/assets/site.css".to_string(), "text/css", "{"),
    ] {
        let reply = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("page");
        assert_eq!(reply.status(), 200, "{path}");
        let content_type = reply.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let body = reply.text().await.expect("body");
        assert!(body.contains(text), "{path}: {body}");
    }
}

/// The donation completes, counts in its campaign's totals, and its receipt reaches the mailbox.
async fn completed_with_receipt(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    campaign: &str,
    donation: &str,
    email: &str,
    sink: &SmtpSink,
) {
    let get = |path: String| async move {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    eventually(
        Duration::from_secs(60),
        "the donation to complete and count",
        || async {
            let d = get(format!("/api/v1/donations/{donation}")).await?;
            let t = get(format!("/api/v1/totals/campaigns/{campaign}")).await?;
            (d["status"] == "COMPLETED"
                && t["total_donations"] == 1
                && t["total_amount_minor"] == 2500)
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the receipt in the mailbox",
        || async {
            let messages = sink.messages.lock().await;
            messages.iter().any(|m| m.contains(email)).then_some(())
        },
    )
    .await;
}
