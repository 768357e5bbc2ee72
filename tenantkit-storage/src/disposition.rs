//! The `Content-Disposition` of downloads.
//!
//! Used by the local store's downloads (`local`) and S3's signed GETs (`s3`): with neither
//! feature nothing here is compiled.

#[cfg(any(feature = "local", feature = "s3"))]
use http::HeaderValue;

/// `attachment` with an ASCII fallback name and the RFC 5987 UTF-8 one.
#[cfg(any(feature = "local", feature = "s3"))]
pub(crate) fn content_disposition_value(filename: &str) -> HeaderValue {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

/// `attachment; filename=…` as text (for S3's `response-content-disposition`).
#[cfg(feature = "s3")]
pub(crate) fn content_disposition_text(filename: &str) -> String {
    content_disposition_value(filename)
        .to_str()
        .map(str::to_owned)
        .unwrap_or_else(|_| "attachment".to_owned())
}

/// The header value.
#[cfg(feature = "local")]
pub(crate) fn content_disposition(filename: &str) -> HeaderValue {
    content_disposition_value(filename)
}
