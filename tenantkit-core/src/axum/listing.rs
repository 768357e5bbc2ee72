//! The query of a list endpoint: the page and a filter, every bad parameter named.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, PoisonError, RwLock};

use ::axum::extract::FromRequestParts;
use http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;

use crate::{Error, FieldError, PageRequest, Problem};

/// At most this many query parameters; a longer query string answers 400 before any of it
/// is looked at, so its cost per request is bounded.
pub const MAX_QUERY_PARAMETERS: usize = 64;

/// The query parameters a type declares (its `IntoParams` names), computed once per type.
fn parameter_names<T: IntoParams + 'static>() -> &'static [String] {
    static NAMES: LazyLock<RwLock<HashMap<TypeId, &'static [String]>>> =
        LazyLock::new(Default::default);
    let key = TypeId::of::<T>();
    if let Some(names) = NAMES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return names;
    }
    let names: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| p.name)
        .collect();
    let names: &'static [String] = Box::leak(names.into_boxed_slice());
    NAMES
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, names);
    names
}

/// The raw `name=value` pairs of a query string, decoded, at most
/// [`MAX_QUERY_PARAMETERS`] of them.
fn query_pairs(parts: &Parts) -> Result<Vec<(String, String)>, Problem> {
    let query = parts.uri.query().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .take(MAX_QUERY_PARAMETERS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.len() > MAX_QUERY_PARAMETERS {
        return Err(Problem::new(
            crate::ErrorCode::BadRequest,
            format!("The query string has more than {MAX_QUERY_PARAMETERS} parameters."),
        ));
    }
    Ok(pairs)
}

/// Deserializes `T` from `pairs`; when that fails, finds every pair that fails on its own, so
/// one answer names every bad parameter.
fn deserialize_pairs<T: DeserializeOwned>(
    pairs: &[(&str, &str)],
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let encode = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    match serde_urlencoded::from_str::<T>(&encode(pairs)) {
        Ok(value) => Some(value),
        Err(whole) => {
            let before = errors.len();
            for pair in pairs {
                if let Err(err) =
                    serde_urlencoded::from_str::<T>(&encode(std::slice::from_ref(pair)))
                {
                    let message: String = err.to_string().chars().take(200).collect();
                    errors.push(FieldError::new(pair.0, format!("is invalid: {message}")));
                }
            }
            if errors.len() == before {
                // Every parameter is fine on its own, but not together.
                let message: String = whole.to_string().chars().take(200).collect();
                errors.push(FieldError::new("query", message));
            }
            None
        }
    }
}

/// Splits the pairs into those `known` names, once each; unknown and repeated names become
/// field errors (each named once).
fn known_pairs<'a>(
    pairs: &'a [(String, String)],
    known: &HashSet<&str>,
    errors: &mut Vec<FieldError>,
) -> Vec<(&'a str, &'a str)> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut reported: HashSet<&str> = HashSet::new();
    let mut accepted = Vec::new();
    for (name, value) in pairs {
        let name = name.as_str();
        if !known.contains(name) {
            if reported.insert(name) {
                errors.push(FieldError::new(name, "is not a parameter of this endpoint"));
            }
        } else if !seen.insert(name) {
            if reported.insert(name) {
                errors.push(FieldError::new(name, "must be given at most once"));
            }
        } else {
            accepted.push((name, value.as_str()));
        }
    }
    // A repeated parameter is refused, not resolved to its first value.
    accepted.retain(|(name, _)| !reported.contains(name));
    accepted
}

/// A query-string filter of a list: its `IntoParams` declaration is both the OpenAPI
/// documentation and the set of names the endpoint accepts, so the two cannot drift.
pub trait QueryFilter: DeserializeOwned + IntoParams + Default + Send + 'static {
    /// Checks what the types alone cannot (lengths, ranges), adding field errors.
    fn check(&self, _errors: &mut Vec<FieldError>) {}
}

impl QueryFilter for NoFilter {}

/// The filter of a list that has none.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoFilter {}

/// `limit` and `cursor`, on every list.
#[derive(Debug, Default, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20); out of range is 422, never capped.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The query of a list endpoint: the page and the endpoint's filter `F`. Unknown or repeated
/// parameters and invalid values answer 422 `validation_failed`, every one named in `errors`.
#[derive(Debug)]
pub struct Listing<F> {
    /// Which page.
    pub page: PageRequest,
    /// The filter.
    pub filter: F,
}

impl<F: QueryFilter, S: Send + Sync> FromRequestParts<S> for Listing<F> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts)?;
        let page_names = parameter_names::<PageQuery>();
        let filter_names = parameter_names::<F>();
        let known: HashSet<&str> = page_names
            .iter()
            .chain(filter_names)
            .map(String::as_str)
            .collect();
        let mut errors = Vec::new();
        let accepted = known_pairs(&pairs, &known, &mut errors);
        let of = |names: &[String]| -> Vec<(&str, &str)> {
            accepted
                .iter()
                .filter(|(name, _)| names.iter().any(|n| n == name))
                .copied()
                .collect()
        };
        let page_query: Option<PageQuery> = deserialize_pairs(&of(page_names), &mut errors);
        let filter: Option<F> = deserialize_pairs(&of(filter_names), &mut errors);
        let page = match page_query {
            Some(query) => match PageRequest::from_query(query.limit, query.cursor.as_deref()) {
                Ok(page) => Some(page),
                Err(Error::Validation(more)) => {
                    errors.extend(more);
                    None
                }
                Err(other) => return Err(other.into()),
            },
            None => None,
        };
        if let Some(filter) = &filter {
            filter.check(&mut errors);
        }
        match (page, filter) {
            (Some(page), Some(filter)) if errors.is_empty() => Ok(Listing { page, filter }),
            _ => Err(Error::Validation(errors).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::axum::test_support::send;
    use ::axum::Router;
    use ::axum::body::Body;
    use ::axum::routing::get;
    use http::{Request, StatusCode};

    /// A filter with one parameter.
    #[derive(Debug, Default, serde::Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    struct Colour {
        /// The colour, at most 8 characters.
        colour: Option<String>,
    }

    impl QueryFilter for Colour {
        fn check(&self, errors: &mut Vec<FieldError>) {
            if self.colour.as_ref().is_some_and(|c| c.len() > 8) {
                errors.push(FieldError::new("colour", "is too long"));
            }
        }
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/things",
                get(|listing: Listing<Colour>| async move {
                    format!("{:?}", listing.filter.colour)
                }),
            )
            .route(
                "/plain",
                get(|_: Listing<NoFilter>| async { "ok" }),
            )
    }

    async fn query(path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let (response, body) = send(router(), request).await;
        (response.status(), body)
    }

    fn fields(body: &serde_json::Value) -> Vec<String> {
        body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_valid_query_is_accepted() {
        for path in ["/things", "/things?colour=red&limit=5", "/plain?limit=100"] {
            let (status, _) = query(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn every_bad_parameter_is_named_in_one_answer() {
        let (status, body) = query("/things?limit=0&shape=round&colour=red&colour=blue&x=1").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "validation_failed");
        let mut named = fields(&body);
        named.sort();
        assert_eq!(named, ["colour", "limit", "shape", "x"]);
        let (status, body) = query("/things?colour=ultraviolet&limit=abc").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let mut named = fields(&body);
        named.sort();
        assert_eq!(named, ["colour", "limit"]);
        let (_, body) = query("/plain?colour=red").await;
        assert_eq!(fields(&body), ["colour"]);
    }

    #[tokio::test]
    async fn too_many_parameters_are_refused_before_any_is_read() {
        let long: Vec<String> = (0..=MAX_QUERY_PARAMETERS)
            .map(|i| format!("p{i}=1"))
            .collect();
        let (status, body) = query(&format!("/things?{}", long.join("&"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], "bad_request");
    }
}
