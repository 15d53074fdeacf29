//! The yardstick for read benchmarks: a trivial axum handler returning a fixed JSON body of the
//! same size as a totals response, on the same runtime settings as `cfa-server`.
//!
//! `cargo run --release -p cfa-server --example trivial_http -- 127.0.0.1:8199`

use axum::Router;
use axum::http::header;
use axum::routing::get;

const BODY: &str = r#"{"campaign_id":"00000000-0000-0000-0000-000000000000","total_donations":12,"total_amount":1234.50,"total_amount_minor":123450,"unique_donors":9,"goal_amount":5000.00,"goal_amount_minor":500000,"currency":"USD","last_updated":"2026-11-26T12:00:00.000000Z","data_source":"cache","cache_age_seconds":0.1}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8199".into());
    let app = Router::new().route(
        "/totals",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
