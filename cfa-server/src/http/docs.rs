//! `GET /docs`: the OpenAPI document, browsable, with Swagger UI's files embedded in the binary
//! (utoipa-swagger-ui's `vendored` build: no CDN, nothing fetched at run time).

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use utoipa_swagger_ui::Config;

use super::AppState;
use super::error::ApiError;

/// Where the UI is served; the document it shows is `GET /api/v1/openapi.json`.
pub const PATH: &str = "/docs";

static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::new(["/api/v1/openapi.json"])
            .try_it_out_enabled(true)
            .display_request_duration(true),
    )
});

/// The routes of the UI. They are not API operations, so they are not in the document.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PATH, get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(|| file(String::new())))
        .route("/docs/{*file}", get(|Path(name): Path<String>| file(name)))
}

/// One of Swagger UI's files (`index.html` for the directory itself).
async fn file(name: String) -> Response {
    let name = if name.is_empty() {
        "index.html".to_string()
    } else {
        name
    };
    match utoipa_swagger_ui::serve(&name, CONFIG.clone()) {
        Ok(Some(file)) => {
            let content_type = HeaderValue::from_str(&file.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, content_type),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=3600"),
                    ),
                ],
                file.bytes.into_owned(),
            )
                .into_response()
        }
        Ok(None) => {
            ApiError::NotFound(format!("no such file in the API docs: {name}")).into_response()
        }
        Err(e) => ApiError::Internal(format!("Swagger UI file {name}: {e}")).into_response(),
    }
}
