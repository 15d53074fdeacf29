//! Reading JSON objects from the wire with errors that name the field, for HTTP bodies and for
//! the provider's webhooks alike.

use serde::de::DeserializeOwned;

/// Why a body is not the JSON object expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or not an object: a syntax error.
    #[error("{0}")]
    Malformed(String),
    /// A field is missing, of the wrong type or has an invalid value.
    #[error("{field}: {message}")]
    Field {
        /// Dotted path of the field (`body` for the object itself).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Types a JSON object; trailing data is malformed.
pub fn object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(JsonError::Malformed(
            "the body must be a JSON object".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !matches!(inner.classify(), serde_json::error::Category::Data) {
            return JsonError::Malformed(inner.to_string());
        }
        let inner = inner.to_string();
        // serde reports a missing field at the parent path; name the field itself.
        let field = match inner.strip_prefix("missing field `") {
            Some(rest) => rest.split('`').next().unwrap_or(&path).to_string(),
            None if path == "." => "body".to_string(),
            None => path,
        };
        JsonError::Field {
            field,
            message: strip_position(&inner),
        }
    })?;
    de.end().map_err(|e| JsonError::Malformed(e.to_string()))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 42"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
