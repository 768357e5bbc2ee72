//! Content sniffing: do a file's bytes agree with the type it declares?
//!
//! A client declares a content type when it asks to upload; the bytes it then sends are
//! checked against it before the upload becomes a file. The promise:
//!
//! - types with a magic number (images, PDF, archives, audio and video containers) must start
//!   with it, and a file that starts with another type's magic number is refused;
//! - whatever the declared type, bytes that *start* as markup a browser would render or run
//!   (HTML, SVG, XML, after whitespace and a byte-order mark) are refused;
//! - every type without a magic number (`text/plain`, `text/csv`, `application/json`,
//!   `application/octet-stream`, … — what a browser may render inline or sniff) is scanned
//!   over the **whole** object, case-insensitively, for the [`RISKY_MARKERS`] (tags such as
//!   `<script`, `<svg`, `<html`, `<iframe`, `<img`, and `javascript:`, `onerror=`, `onload=`
//!   with any ASCII whitespace inside) and refused when one occurs anywhere;
//! - text types must be valid UTF-8 without NUL bytes, over the whole object.
//!
//! [`Scanner`] does this in one streamed pass with bounded memory (the first [`SNIFF_BYTES`]
//! plus a few dozen bytes of overlap, so a marker split across two chunks is still found);
//! [`check`] runs it over bytes already in memory.

/// How many leading bytes the signature and leading-markup checks look at.
pub const SNIFF_BYTES: usize = 1024;

/// Markers refused anywhere in a type without a magic number, compared case-insensitively.
/// The tags are matched as written (HTML allows no whitespace after `<`); the others are
/// matched with ASCII whitespace removed, since browsers ignore tabs and newlines inside a
/// `javascript:` URL and allow spaces around an attribute's `=`.
pub const RISKY_MARKERS: &[&str] = &[
    "<script",
    "<svg",
    "<html",
    "<iframe",
    "<frame",
    "<img",
    "<object",
    "<embed",
    "<body",
    "<math",
    "<meta",
    "<link",
    "<style",
    "<form",
    "<base",
    "<!doctype",
    "<?xml",
    "javascript:",
    "vbscript:",
    "onerror=",
    "onload=",
];

/// The markers matched with whitespace removed (a suffix of [`RISKY_MARKERS`]).
const SQUEEZED_MARKERS: &[&[u8]] = &[b"javascript:", b"vbscript:", b"onerror=", b"onload="];

/// How many trailing bytes of a chunk are kept so that a marker straddling two chunks is
/// found: one less than the longest marker.
const OVERLAP: usize = 15;

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

/// Whether the declared type agrees with `bytes`, the **whole** object (see the module docs
/// for what is checked). For an object streamed in chunks, use [`Scanner`].
///
/// # Errors
/// A short, client-safe reason.
pub fn check(declared: &str, bytes: &[u8]) -> Result<(), &'static str> {
    let mut scanner = Scanner::new(declared);
    scanner.update(bytes);
    scanner.finish()
}

/// One streamed pass of [`check`] over an object: feed every chunk in order to
/// [`Scanner::update`], then ask [`Scanner::finish`]. Memory stays bounded whatever the
/// object's size: the first [`SNIFF_BYTES`], a few dozen bytes of overlap between chunks and
/// at most three bytes of a UTF-8 character cut by a chunk boundary.
#[derive(Debug, Clone)]
pub struct Scanner {
    declared: String,
    /// The object's first bytes, for the signature and leading-markup checks.
    prefix: Vec<u8>,
    /// Whether the whole object is scanned for [`RISKY_MARKERS`] (types without a signature).
    markers: bool,
    /// Whether the whole object must be UTF-8 without NUL bytes.
    text: bool,
    /// The last bytes seen, lowercased, so a tag marker split by a chunk boundary is found.
    raw_tail: Vec<u8>,
    /// The same without ASCII whitespace, for the squeezed markers.
    squeezed_tail: Vec<u8>,
    /// The start of a UTF-8 character the previous chunk ended in the middle of.
    utf8_carry: Vec<u8>,
    failure: Option<&'static str>,
}

const MARKUP: &str = "content is markup a browser would render";

impl Scanner {
    /// A pass for an object declared as `declared`.
    pub fn new(declared: &str) -> Self {
        Self {
            declared: declared.to_owned(),
            prefix: Vec::with_capacity(SNIFF_BYTES),
            markers: !SIGNATURES.iter().any(|(kind, _, _)| *kind == declared),
            text: declared.starts_with("text/") || declared == "application/json",
            raw_tail: Vec::new(),
            squeezed_tail: Vec::new(),
            utf8_carry: Vec::new(),
            failure: None,
        }
    }

    /// Whether a pass for `declared` must read the whole object: types without a signature
    /// are scanned for markers everywhere (for the others, [`SNIFF_BYTES`] suffice when the
    /// SHA-256 is known otherwise).
    pub fn reads_whole_object(declared: &str) -> bool {
        Self::new(declared).markers
    }

    /// The next chunk of the object.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.failure.is_some() || chunk.is_empty() {
            return;
        }
        if self.prefix.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.prefix.len()).min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..take]);
        }
        if self.text {
            self.failure = self.check_text(chunk);
            if self.failure.is_some() {
                return;
            }
        }
        if self.markers && self.has_marker(chunk) {
            self.failure = Some(MARKUP);
        }
    }

    fn check_text(&mut self, chunk: &[u8]) -> Option<&'static str> {
        if chunk.contains(&0) {
            return Some("text content contains NUL bytes");
        }
        let mut data = std::mem::take(&mut self.utf8_carry);
        data.extend_from_slice(chunk);
        match std::str::from_utf8(&data) {
            Ok(_) => None,
            // Only a character cut at the end of the chunk may be incomplete.
            Err(e) if e.error_len().is_none() => {
                self.utf8_carry = data[e.valid_up_to()..].to_vec();
                None
            }
            Err(_) => Some("text content is not UTF-8"),
        }
    }

    fn has_marker(&mut self, chunk: &[u8]) -> bool {
        let mut raw = std::mem::take(&mut self.raw_tail);
        raw.extend(chunk.iter().map(u8::to_ascii_lowercase));
        let mut squeezed = std::mem::take(&mut self.squeezed_tail);
        squeezed.extend(
            chunk
                .iter()
                .filter(|b| !b.is_ascii_whitespace())
                .map(u8::to_ascii_lowercase),
        );
        let tags = RISKY_MARKERS
            .iter()
            .map(|m| m.as_bytes())
            .filter(|m| m.starts_with(b"<"));
        let found = raw
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'<')
            .any(|(at, _)| tags.clone().any(|tag| raw[at..].starts_with(tag)))
            || squeezed
                .iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, b'j' | b'v' | b'o'))
                .any(|(at, _)| {
                    SQUEEZED_MARKERS
                        .iter()
                        .any(|marker| squeezed[at..].starts_with(marker))
                });
        self.raw_tail = tail(raw);
        self.squeezed_tail = tail(squeezed);
        found
    }

    /// The verdict over everything fed so far, as the whole object.
    ///
    /// # Errors
    /// A short, client-safe reason.
    pub fn finish(self) -> Result<(), &'static str> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if self.text && !self.utf8_carry.is_empty() {
            return Err("text content is not UTF-8");
        }
        check_prefix(&self.declared, &self.prefix)
    }
}

fn tail(mut bytes: Vec<u8>) -> Vec<u8> {
    let cut = bytes.len().saturating_sub(OVERLAP);
    bytes.drain(..cut);
    bytes
}

/// The checks of the first [`SNIFF_BYTES`]: allowed at all, no leading markup, the declared
/// type's signature, no other type's signature.
fn check_prefix(declared: &str, prefix: &[u8]) -> Result<(), &'static str> {
    if NEVER_ALLOWED.contains(&declared) {
        return Err("content type not allowed");
    }
    if looks_like_active_markup(prefix) {
        return Err(MARKUP);
    }
    let signatures: Vec<_> = SIGNATURES
        .iter()
        .filter(|(kind, _, _)| *kind == declared)
        .collect();
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

    #[test]
    fn markers_are_found_anywhere_in_types_without_a_signature() {
        let mut body = "plain words, nothing to see\n".repeat(100).into_bytes();
        assert!(body.len() > SNIFF_BYTES);
        assert_eq!(check("text/plain", &body), Ok(()));
        body.extend_from_slice(b"<IMG src=x OnError = alert(1)>");
        for declared in ["text/plain", "text/csv", "application/json"] {
            assert_eq!(check(declared, &body), Err(MARKUP), "{declared}");
        }
        for marker in RISKY_MARKERS {
            let mut body = "a,b\n".repeat(400).into_bytes();
            body.extend_from_slice(marker.to_ascii_uppercase().as_bytes());
            assert_eq!(check("text/csv", &body), Err(MARKUP), "{marker}");
        }
        // Whitespace inside a URL scheme or around `=` does not hide it.
        assert_eq!(
            check("text/plain", b"x java\tscript\n:alert(1)"),
            Err(MARKUP)
        );
        // Types with a signature are checked by it, not by the markers.
        let mut png = PNG.to_vec();
        png.extend_from_slice(b"<script>");
        assert_eq!(check("image/png", &png), Ok(()));
    }

    #[test]
    fn a_marker_split_across_chunks_is_found() {
        let mut body = "x".repeat(3000).into_bytes();
        body.extend_from_slice(b"<ScRiPt>alert(1)</script>");
        body.extend_from_slice(&b"y".repeat(100));
        for chunk in [1, 2, 3, 7, 1000, 3001, 3003] {
            let mut scanner = Scanner::new("text/plain");
            for piece in body.chunks(chunk) {
                scanner.update(piece);
                assert!(scanner.raw_tail.len() <= OVERLAP);
                assert!(scanner.squeezed_tail.len() <= OVERLAP);
                assert!(scanner.prefix.len() <= SNIFF_BYTES);
            }
            assert_eq!(scanner.finish(), Err(MARKUP), "chunks of {chunk}");
        }
    }

    #[test]
    fn utf8_is_checked_over_the_whole_object_and_across_chunks() {
        let body = "é".repeat(2000).into_bytes();
        for chunk in [1, 2, 3, 1023, 1024] {
            let mut scanner = Scanner::new("text/plain");
            body.chunks(chunk).for_each(|piece| scanner.update(piece));
            assert_eq!(scanner.finish(), Ok(()), "chunks of {chunk}");
        }
        let mut bad = body.clone();
        bad.push(0xff);
        bad.extend_from_slice(b"tail");
        assert_eq!(check("text/plain", &bad), Err("text content is not UTF-8"));
        let mut cut = body.clone();
        cut.push(0xc3);
        assert_eq!(check("text/plain", &cut), Err("text content is not UTF-8"));
        let mut nul = body;
        nul.push(0);
        assert!(check("text/plain", &nul).is_err());
    }

    #[test]
    fn the_marker_tables_agree() {
        for marker in RISKY_MARKERS {
            assert!(
                marker.len() <= OVERLAP + 1,
                "{marker} is longer than the overlap"
            );
            assert_eq!(marker.to_ascii_lowercase(), *marker);
        }
        for marker in SQUEEZED_MARKERS {
            assert!(RISKY_MARKERS.iter().any(|m| m.as_bytes() == *marker));
            assert!(matches!(marker[0], b'j' | b'v' | b'o'));
        }
    }
}
