//! Keyset pagination: opaque cursors, bounded limits, stable order.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, FieldError, Result};

/// How many items a page holds: 1 to [`Limit::MAX`], [`Limit::DEFAULT`] when not given.
///
/// A limit above the maximum is rejected, not silently capped, so a client never mistakes a
/// short page for the end of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    /// The page size when the client gives none.
    pub const DEFAULT: Limit = Limit(20);
    /// The largest page a client may ask for.
    pub const MAX: u32 = 100;

    /// Checks a client-given limit.
    ///
    /// # Errors
    /// `validation_failed` on `limit` when it is 0 or above [`Limit::MAX`].
    pub fn new(limit: u32) -> Result<Self> {
        if (1..=Self::MAX).contains(&limit) {
            Ok(Limit(limit))
        } else {
            Err(Error::invalid(
                "limit",
                format!("must be between 1 and {}", Self::MAX),
            ))
        }
    }

    /// The number of items.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An opaque position in a list: the page continues after the record it names.
///
/// Clients see only a URL-safe string; its content is versioned so the format can change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Uuid);

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// The position just after the record with this key.
    pub fn after(key: Uuid) -> Self {
        Cursor(key)
    }

    /// The key of the last record of the previous page.
    pub fn key(self) -> Uuid {
        self.0
    }

    /// The string sent to clients.
    pub fn encode(self) -> String {
        let mut raw = [0u8; 17];
        raw[0] = CURSOR_VERSION;
        raw[1..].copy_from_slice(self.0.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a cursor a client sent back.
    ///
    /// # Errors
    /// `validation_failed` on `cursor` when it is not a cursor this API produced.
    pub fn decode(text: &str) -> Result<Self> {
        let invalid = || Error::invalid("cursor", "is not a cursor returned by this API");
        // A real cursor is 23 characters; anything much longer is not worth decoding.
        if text.len() > 64 {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        match raw.as_slice() {
            [CURSOR_VERSION, key @ ..] => Uuid::from_slice(key).map(Cursor).map_err(|_| invalid()),
            _ => Err(invalid()),
        }
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor({})", self.encode())
    }
}

/// Which page of a list to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most.
    pub limit: Limit,
    /// Start after this position; `None` for the first page.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: Limit) -> Self {
        Self { limit, after: None }
    }

    /// Builds a request from raw query parameters (`?limit=&cursor=`), reporting every invalid
    /// field at once.
    ///
    /// # Errors
    /// `validation_failed` naming `limit` and/or `cursor`.
    pub fn from_query(limit: Option<u32>, cursor: Option<&str>) -> Result<Self> {
        let mut errors: Vec<FieldError> = Vec::new();
        let mut collect = |result: Result<()>| {
            if let Err(Error::Validation(mut e)) = result {
                errors.append(&mut e);
            }
        };
        let mut request = PageRequest::default();
        collect(limit.map(Limit::new).transpose().map(|l| {
            request.limit = l.unwrap_or_default();
        }));
        collect(
            cursor
                .filter(|c| !c.is_empty())
                .map(Cursor::decode)
                .transpose()
                .map(|c| {
                    request.after = c;
                }),
        );
        if errors.is_empty() {
            Ok(request)
        } else {
            Err(Error::Validation(errors))
        }
    }

    /// The exclusive lower bound of a keyset query (`WHERE id > $n`): the nil UUID on page
    /// one.
    pub fn after_key(&self) -> Uuid {
        self.after.map(Cursor::key).unwrap_or(Uuid::nil())
    }

    /// How many rows to fetch (`LIMIT $n`): one more than the limit, to learn whether a next
    /// page exists.
    pub fn fetch_count(&self) -> i64 {
        i64::from(self.limit.get()) + 1
    }
}

/// One page of a list: `{items, next_cursor}`. `next_cursor` is absent on the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items, in a stable order (creation order).
    pub items: Vec<T>,
    /// Pass back as `cursor` to read the next page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in key order (see
    /// [`PageRequest::fetch_count`]); `key` gives the keyset key of a row.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> Uuid) -> Self {
        let limit = request.limit.get() as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| Cursor::after(key(last)).encode())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    /// Converts the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_is_url_safe() {
        let key = Uuid::now_v7();
        let text = Cursor::after(key).encode();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(Cursor::decode(&text).expect("decode").key(), key);
    }

    #[test]
    fn garbage_cursors_are_validation_errors() {
        let wrong_version = URL_SAFE_NO_PAD.encode([2u8; 17]);
        let short = URL_SAFE_NO_PAD.encode([1u8; 5]);
        let huge = "A".repeat(10_000);
        for bad in [
            "",
            "!!!",
            "not base64 at all",
            &wrong_version,
            &short,
            &huge,
        ] {
            match Cursor::decode(bad) {
                Err(Error::Validation(errors)) => assert_eq!(errors[0].field, "cursor"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn limits_outside_1_to_100_are_rejected_not_capped() {
        assert_eq!(Limit::new(1).map(Limit::get).ok(), Some(1));
        assert_eq!(Limit::new(100).map(Limit::get).ok(), Some(100));
        assert!(Limit::new(0).is_err());
        assert!(Limit::new(101).is_err());
    }

    #[test]
    fn from_query_reports_both_fields() {
        match PageRequest::from_query(Some(1000), Some("%%%")) {
            Err(Error::Validation(errors)) => {
                let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["limit", "cursor"]);
            }
            other => panic!("{other:?}"),
        }
        let ok = PageRequest::from_query(None, None).expect("defaults");
        assert_eq!(ok.limit, Limit::DEFAULT);
    }
}
