//! Content sniffing: do a file's first bytes agree with the type it declares?
//!
//! A client declares a content type when it asks to upload; the bytes it then sends are
//! checked against it before the upload becomes a file. Types with a magic number (images,
//! PDF, archives, audio and video containers) must start with it; every type is refused when
//! the bytes are markup a browser would render or run (HTML, SVG, XML with scripts), whatever
//! the declared type. Text types must be valid UTF-8 (in the sniffed prefix).

/// How many leading bytes [`check`] looks at.
pub const SNIFF_BYTES: usize = 1024;

/// The media types that may never be stored, because a browser would render or run them
/// from the same origin: refused in every configuration, even when allowed by mistake.
pub const NEVER_ALLOWED: &[&str] = &[
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "application/javascript",
    "text/javascript",
    "application/ecmascript",
    "text/xml",
    "application/xml",
];

/// The default allowed types: common images, PDF, plain text, CSV, JSON, ZIP and a few
/// audio/video containers, all with a signature (or a text check) [`check`] verifies.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/json",
    "application/zip",
    "audio/mpeg",
    "video/mp4",
];

/// The magic numbers: (type, offset, bytes).
const SIGNATURES: &[(&str, usize, &[u8])] = &[
    ("image/png", 0, b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", 0, b"\xff\xd8\xff"),
    ("image/gif", 0, b"GIF87a"),
    ("image/gif", 0, b"GIF89a"),
    ("image/webp", 8, b"WEBP"),
    ("application/pdf", 0, b"%PDF-"),
    ("application/zip", 0, b"PK\x03\x04"),
    ("application/zip", 0, b"PK\x05\x06"),
    ("application/gzip", 0, b"\x1f\x8b"),
    ("audio/mpeg", 0, b"ID3"),
    ("audio/mpeg", 0, b"\xff\xfb"),
    ("video/mp4", 4, b"ftyp"),
];

/// Whether the declared type agrees with `prefix`, the object's first bytes (at most
/// [`SNIFF_BYTES`] of them; fewer only when the object is shorter).
///
/// # Errors
/// A short, client-safe reason.
pub fn check(declared: &str, prefix: &[u8]) -> Result<(), &'static str> {
    if NEVER_ALLOWED.contains(&declared) {
        return Err("content type not allowed");
    }
    if looks_like_active_markup(prefix) {
        return Err("content is markup a browser would render");
    }
    let signatures: Vec<_> = SIGNATURES
        .iter()
        .filter(|(kind, _, _)| *kind == declared)
        .collect();
    if signatures.is_empty()
        && (contains_ignore_case(prefix, b"<script") || contains_ignore_case(prefix, b"<svg"))
    {
        return Err("content is markup a browser would render");
    }
    if !signatures.is_empty() {
        let matches = signatures.iter().any(|(_, offset, magic)| {
            prefix.len() >= offset + magic.len() && &prefix[*offset..offset + magic.len()] == *magic
        });
        return if matches {
            Ok(())
        } else {
            Err("content does not match the declared type")
        };
    }
    // A declared type without a signature must not hide a file that has one (a PNG declared
    // as text is fine to refuse: the client said something untrue).
    if let Some((kind, _, _)) = SIGNATURES.iter().find(|(_, offset, magic)| {
        prefix.len() >= offset + magic.len() && &prefix[*offset..offset + magic.len()] == *magic
    }) && *kind != declared
        && declared != "application/octet-stream"
    {
        return Err("content does not match the declared type");
    }
    if declared.starts_with("text/") || declared == "application/json" {
        // Only a multibyte character cut at the end of the prefix may be incomplete.
        if let Err(e) = std::str::from_utf8(prefix)
            && (e.error_len().is_some() || prefix.len() < SNIFF_BYTES)
        {
            return Err("text content is not UTF-8");
        }
        if prefix.contains(&0) {
            return Err("text content contains NUL bytes");
        }
    }
    Ok(())
}

/// HTML, SVG or XML a browser would render: the WHATWG sniffing patterns, after leading
/// whitespace and a byte-order mark, case-insensitively.
fn looks_like_active_markup(prefix: &[u8]) -> bool {
    let mut rest = prefix;
    if let Some(after) = rest.strip_prefix(b"\xef\xbb\xbf") {
        rest = after;
    }
    while let Some((first, after)) = rest.split_first() {
        if matches!(first, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') {
            rest = after;
        } else {
            break;
        }
    }
    const TAGS: &[&[u8]] = &[
        b"<!doctype html",
        b"<html",
        b"<head",
        b"<script",
        b"<iframe",
        b"<h1",
        b"<div",
        b"<font",
        b"<table",
        b"<a",
        b"<style",
        b"<title",
        b"<b",
        b"<body",
        b"<br",
        b"<p",
        b"<!--",
        b"<svg",
        b"<?xml",
    ];
    TAGS.iter().any(|tag| {
        rest.len() > tag.len()
            && rest[..tag.len()].eq_ignore_ascii_case(tag)
            && (matches!(rest[tag.len()], b' ' | b'>' | b'\t' | b'\n' | b'\r' | b'/')
                || tag.starts_with(b"<!--")
                || tag.starts_with(b"<?xml"))
    })
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn signatures_must_match_the_declared_type() {
        assert_eq!(check("image/png", PNG), Ok(()));
        assert!(check("image/jpeg", PNG).is_err());
        assert!(check("image/png", b"<html><body>hi</body></html>").is_err());
        assert!(check("image/png", b"GIF89a....").is_err());
        assert!(check("image/png", b"").is_err());
        assert_eq!(check("application/pdf", b"%PDF-1.7\n"), Ok(()));
        assert_eq!(check("image/webp", b"RIFF\0\0\0\0WEBPVP8 "), Ok(()));
    }

    #[test]
    fn markup_is_refused_whatever_the_declared_type() {
        for body in [
            &b"<!DOCTYPE html><p>x"[..],
            b"  \n<HTML>",
            b"\xef\xbb\xbf<svg xmlns='http://www.w3.org/2000/svg'>",
            b"hello <script>alert(1)</script>",
            b"<?xml version='1.0'?><x/>",
        ] {
            for declared in [
                "text/plain",
                "application/json",
                "text/csv",
                "application/octet-stream",
            ] {
                assert!(check(declared, body).is_err(), "{declared}");
            }
        }
        for declared in NEVER_ALLOWED {
            assert!(check(declared, b"plain").is_err());
        }
    }

    #[test]
    fn text_must_be_text() {
        assert_eq!(check("text/plain", "héllo, world\n".as_bytes()), Ok(()));
        assert_eq!(check("text/csv", b"a,b\n1,2\n"), Ok(()));
        assert!(check("text/plain", b"\xff\xfe\0\0").is_err());
        assert!(check("text/plain", PNG).is_err());
        assert_eq!(check("text/plain", b"a < b and c > d"), Ok(()));
    }
}
