//! [`Secret`]: a token or key secret in a request or an answer.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A secret the API hands out or takes (a bearer or refresh token, a CSRF
/// token, an S3 secret key): on the wire a plain string, in memory zeroized
/// when dropped, and never shown by `{:?}`, so a logged body or error
/// cannot carry it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret string (moved, not copied).
    pub fn new(s: String) -> Self {
        Secret(Zeroizing::new(s))
    }

    /// The secret, to send it or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<Zeroizing<String>> for Secret {
    fn from(s: Zeroizing<String>) -> Self {
        Secret(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl utoipa::PartialSchema for Secret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_a_plain_string_on_the_wire_and_hidden_from_debug() {
        let s = Secret::new("dmat_abc".into());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"dmat_abc\"");
        let back: Secret = serde_json::from_str("\"dmat_abc\"").unwrap();
        assert_eq!(back.expose(), "dmat_abc");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(!format!("{:?}", Some(&s)).contains("abc"));
    }
}
