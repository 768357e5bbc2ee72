//! Browser uploads straight to S3: SigV4 POST policies.
//!
//! A browser sends a `multipart/form-data` POST to the bucket URL with the fields of
//! `PostPolicy::fields` followed by the `file` part. The `policy` field is a base64 JSON
//! document listing the conditions S3 checks (size range, exact `Content-Type`, bucket, key,
//! the SigV4 credential) and when it expires; `x-amz-signature` is an HMAC of that base64 text
//! under the SigV4 signing key, so the browser can change nothing the conditions cover.
//!
//! The output is byte for byte what boto3's `generate_presigned_post` (botocore 1.44.8)
//! returns for
//!
//! ```text
//! generate_presigned_post(Bucket, Key, Fields={"Content-Type": ct},
//!     Conditions=[["content-length-range", min, max], {"Content-Type": ct}], ExpiresIn=n)
//! ```
//!
//! on an `s3v4` client (see `tests/vectors/s3_post_policy.py`):
//!
//! - the document is Python's `json.dumps` with default settings: `expiration` then
//!   `conditions`, separators `", "` and `": "`, strings escaped with `ensure_ascii=True`;
//! - the conditions are `["content-length-range", min, max]`, `{"Content-Type": ct}`,
//!   `{"bucket": b}`, `{"key": k}` (or `["starts-with", "$key", prefix]` for a key ending in
//!   `${filename}`), `{"x-amz-algorithm": ...}`, `{"x-amz-credential": ...}`,
//!   `{"x-amz-date": ...}`, and `{"x-amz-security-token": t}` with session credentials;
//! - `expiration` is `now + expires_in` as `%Y-%m-%dT%H:%M:%SZ` and `x-amz-date` is `now` as
//!   `%Y%m%dT%H%M%SZ`, both in UTC with the fraction of a second dropped (not rounded);
//! - the string to sign is the base64 policy itself (no canonical request), and the signature
//!   is its HMAC-SHA256 under the SigV4 signing key, in lowercase hex.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::{Duration, OffsetDateTime, UtcOffset};

/// The signing algorithm, in the `x-amz-algorithm` field and condition.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The service name in the credential scope.
const SERVICE: &str = "s3";

/// The key suffix that lets the browser's file name complete the key (boto3's rule: such a key
/// is only constrained by its prefix).
const FILENAME_SUFFIX: &str = "${filename}";

/// Lowercase hexadecimal digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Inputs of one POST policy.
#[derive(Clone)]
pub(crate) struct PostPolicy<'a> {
    /// The access key id (the first part of `x-amz-credential`).
    pub(crate) access_key: &'a str,
    /// The secret access key the signing key is derived from.
    pub(crate) secret_key: &'a str,
    /// The session token of temporary credentials: sent as `x-amz-security-token` and covered
    /// by a condition.
    pub(crate) session_token: Option<&'a str>,
    /// The bucket's region, in the credential scope.
    pub(crate) region: &'a str,
    /// The bucket the form posts to.
    pub(crate) bucket: &'a str,
    /// The object key; one ending in `${filename}` only fixes the part before it.
    pub(crate) key: &'a str,
    /// The exact `Content-Type` the object must be stored with.
    pub(crate) content_type: &'a str,
    /// The smallest accepted file size, in bytes.
    pub(crate) min_size: u64,
    /// The largest accepted file size, in bytes.
    pub(crate) max_size: u64,
    /// The signing time (any offset; used in UTC).
    pub(crate) now: OffsetDateTime,
    /// How long after `now` the policy stays valid.
    pub(crate) expires_in: Duration,
}

/// Written by hand so that the secret key and the session token never reach a log.
impl std::fmt::Debug for PostPolicy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostPolicy")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("content_type", &self.content_type)
            .field("min_size", &self.min_size)
            .field("max_size", &self.max_size)
            .field("now", &self.now)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl PostPolicy<'_> {
    /// The form fields, in the order a browser should send them (before `file`).
    ///
    /// That is boto3's order: `Content-Type`, `key`, `x-amz-algorithm`, `x-amz-credential`,
    /// `x-amz-date`, `x-amz-security-token` (only with a session token), `policy`,
    /// `x-amz-signature`.
    pub(crate) fn fields(&self) -> Vec<(String, String)> {
        let policy = base64::engine::general_purpose::STANDARD.encode(self.document());
        let key = signing_key(self.secret_key, &self.scope_date(), self.region, SERVICE);
        let signature = hex_lower(&hmac_sha256(&key, policy.as_bytes()));

        let mut fields = vec![
            ("Content-Type".to_owned(), self.content_type.to_owned()),
            ("key".to_owned(), self.key.to_owned()),
            ("x-amz-algorithm".to_owned(), ALGORITHM.to_owned()),
            ("x-amz-credential".to_owned(), self.credential()),
            ("x-amz-date".to_owned(), self.amz_date()),
        ];
        if let Some(token) = self.session_token {
            fields.push(("x-amz-security-token".to_owned(), token.to_owned()));
        }
        fields.push(("policy".to_owned(), policy));
        fields.push(("x-amz-signature".to_owned(), signature));
        fields
    }

    /// The policy document (JSON text, before base64), exactly as boto3 writes it.
    pub(crate) fn document(&self) -> String {
        let mut doc = String::with_capacity(512 + 2 * self.key.len());
        doc.push_str("{\"expiration\": ");
        json_string(&mut doc, &self.expiration());
        doc.push_str(", \"conditions\": [[\"content-length-range\", ");
        doc.push_str(&self.min_size.to_string());
        doc.push_str(", ");
        doc.push_str(&self.max_size.to_string());
        doc.push(']');
        push_condition(&mut doc, "Content-Type", self.content_type);
        push_condition(&mut doc, "bucket", self.bucket);
        match self.key.strip_suffix(FILENAME_SUFFIX) {
            Some(prefix) => {
                doc.push_str(", [\"starts-with\", \"$key\", ");
                json_string(&mut doc, prefix);
                doc.push(']');
            }
            None => push_condition(&mut doc, "key", self.key),
        }
        push_condition(&mut doc, "x-amz-algorithm", ALGORITHM);
        push_condition(&mut doc, "x-amz-credential", &self.credential());
        push_condition(&mut doc, "x-amz-date", &self.amz_date());
        if let Some(token) = self.session_token {
            push_condition(&mut doc, "x-amz-security-token", token);
        }
        doc.push_str("]}");
        doc
    }

    /// `now` in UTC. (Should the conversion leave the range `time` supports, which only
    /// happens within a day of its limits, `now` is used as given.)
    fn now_utc(&self) -> OffsetDateTime {
        self.now
            .checked_to_offset(UtcOffset::UTC)
            .unwrap_or(self.now)
    }

    /// The date of the credential scope: `now` as `YYYYMMDD` (the first 8 characters of
    /// `x-amz-date`).
    fn scope_date(&self) -> String {
        let now = self.now_utc();
        format!(
            "{:04}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        )
    }

    /// `x-amz-date`: `now` as `YYYYMMDDTHHMMSSZ`, the fraction of a second dropped.
    fn amz_date(&self) -> String {
        let now = self.now_utc();
        format!(
            "{}T{:02}{:02}{:02}Z",
            self.scope_date(),
            now.hour(),
            now.minute(),
            now.second()
        )
    }

    /// `x-amz-credential`: `ACCESS_KEY/YYYYMMDD/REGION/s3/aws4_request`.
    fn credential(&self) -> String {
        format!(
            "{}/{}/{}/{SERVICE}/aws4_request",
            self.access_key,
            self.scope_date(),
            self.region
        )
    }

    /// The policy's `expiration`: `now + expires_in` as `YYYY-MM-DDTHH:MM:SSZ`, the fraction
    /// of a second dropped (Python's `strftime("%Y-%m-%dT%H:%M:%SZ")`).
    fn expiration(&self) -> String {
        let at = self.now_utc().saturating_add(self.expires_in);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    }
}

/// Appends one `, {"name": "value"}` condition to the document.
fn push_condition(doc: &mut String, name: &str, value: &str) {
    doc.push_str(", {");
    json_string(doc, name);
    doc.push_str(": ");
    json_string(doc, value);
    doc.push('}');
}

/// The SigV4 signing key: HMAC chain over date (YYYYMMDD), region, "s3", "aws4_request".
///
/// `kDate = HMAC("AWS4" + secret, date)`, `kRegion = HMAC(kDate, region)`,
/// `kService = HMAC(kRegion, service)`, `kSigning = HMAC(kService, "aws4_request")`.
pub(crate) fn signing_key(secret_key: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut secret = String::with_capacity(4 + secret_key.len());
    secret.push_str("AWS4");
    secret.push_str(secret_key);
    let k_date = hmac_sha256(secret.as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// HMAC-SHA256 of `msg` under `key` (any length).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC (RFC 2104) hashes a key longer than the hash's block and zero-pads it to the block
    // size. Doing that here gives a full-block key, which the infallible constructor takes:
    // the same MAC as `new_from_slice(key)`, without its `Result` (whose error never happens).
    let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
    let block_bytes = block.as_mut_slice();
    if key.len() > block_bytes.len() {
        let digest = <Sha256 as sha2::Digest>::digest(key);
        block_bytes[..digest.len()].copy_from_slice(digest.as_slice());
    } else {
        block_bytes[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block);
    mac.update(msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(mac.finalize().into_bytes().as_slice());
    out
}

/// Lowercase hexadecimal of `bytes`.
fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for &byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Python json.dumps-compatible string escaping (ensure_ascii=True): ", \\, \n, \r, \t, \b, \f escaped, other control chars \u00XX, non-ASCII as lowercase \uXXXX (surrogate pairs above U+FFFF).
///
/// Appends `s` to `out` as a JSON string literal, quotes included. Printable ASCII
/// (0x20–0x7E) other than `"` and `\` is kept as is (`/` is not escaped); everything else
/// outside it, DEL (0x7F) included, becomes `\uXXXX`.
pub(crate) fn json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    out.push_str("\\u");
                    for shift in [12u32, 8, 4, 0] {
                        out.push(char::from(HEX[usize::from((unit >> shift) & 0x0f)]));
                    }
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use time::format_description::well_known::Rfc3339;

    /// The inputs (written for `tests/vectors/s3_post_policy.py`).
    const CASES: &str = include_str!("../../../tests/vectors/s3_post_policy_cases.json");
    /// What boto3 returned for them.
    const EXPECTED: &str = include_str!("../../../tests/vectors/s3_post_policy_expected.json");

    /// boto3's field order without a session token.
    const ORDER: [&str; 7] = [
        "Content-Type",
        "key",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "policy",
        "x-amz-signature",
    ];

    /// `value[name]` as a string.
    fn text<'v>(value: &'v Value, name: &str) -> &'v str {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name} is not a string in {value}"))
    }

    /// `value[name]` as an unsigned integer.
    fn number(value: &Value, name: &str) -> u64 {
        value
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{name} is not an unsigned integer in {value}"))
    }

    /// The policy of one case of `s3_post_policy_cases.json`.
    fn policy_of(case: &Value) -> PostPolicy<'_> {
        PostPolicy {
            access_key: text(case, "access_key"),
            secret_key: text(case, "secret_key"),
            session_token: None,
            region: text(case, "region"),
            bucket: text(case, "bucket"),
            key: text(case, "key"),
            content_type: text(case, "content_type"),
            min_size: number(case, "min"),
            max_size: number(case, "max"),
            now: OffsetDateTime::parse(text(case, "now"), &Rfc3339).expect("now is RFC 3339"),
            expires_in: Duration::seconds(
                i64::try_from(number(case, "expires_in")).expect("expires_in fits in i64"),
            ),
        }
    }

    /// Parses both vector files, checking they hold the same (non-zero) number of cases.
    fn vectors() -> Vec<(Value, Value)> {
        let cases: Vec<Value> = serde_json::from_str(CASES).expect("cases are a JSON array");
        let expected: Vec<Value> =
            serde_json::from_str(EXPECTED).expect("expected results are a JSON array");
        assert!(!cases.is_empty(), "no cases");
        assert_eq!(cases.len(), expected.len(), "one expected result per case");
        cases.into_iter().zip(expected).collect()
    }

    #[test]
    fn every_field_matches_boto3() {
        for (i, (case, want)) in vectors().iter().enumerate() {
            let policy = policy_of(case);
            assert_eq!(
                policy.document(),
                text(want, "policy_document"),
                "case {i}: policy document"
            );

            let got = policy.fields();
            let names: Vec<&str> = got.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(names, ORDER, "case {i}: field names and order");

            let want_fields = want
                .get("fields")
                .and_then(Value::as_object)
                .expect("fields is an object");
            assert_eq!(got.len(), want_fields.len(), "case {i}: number of fields");
            for (name, value) in &got {
                let want_value = want_fields
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("case {i}: boto3 has no field {name}"));
                assert_eq!(value, want_value, "case {i}: field {name}");
            }
            let got_map: BTreeMap<&str, &str> = got
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let want_map: BTreeMap<&str, &str> = want_fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str().expect("fields are strings")))
                .collect();
            assert_eq!(got_map, want_map, "case {i}: fields");

            // The policy field is the base64 of the document.
            let decoded = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                got_map["policy"],
            )
            .expect("policy is base64");
            assert_eq!(decoded, policy.document().into_bytes(), "case {i}: policy");
        }
    }

    /// serde_json's maps are sorted, so the order boto3 wrote the fields in is read from the
    /// text of the expected file (written by `json.dump`, which keeps boto3's order).
    #[test]
    fn expected_file_lists_fields_in_boto3_order() {
        let mut rest = EXPECTED;
        let mut seen = 0;
        while let Some(start) = rest.find("\"fields\": {") {
            let after = &rest[start..];
            let end = after
                .find("\"policy_document\": ")
                .expect("policy_document follows fields");
            let block = &after[..end];
            let mut at = 0;
            for name in ORDER {
                let needle = format!("\"{name}\": ");
                let found = block[at..]
                    .find(&needle)
                    .unwrap_or_else(|| panic!("case {seen}: {name} is missing or out of order"));
                at += found + needle.len();
            }
            rest = &after[end..];
            seen += 1;
        }
        assert_eq!(seen, vectors().len(), "one fields object per case");
    }

    /// Session credentials, a `${filename}` key, a secret longer than an HMAC block, a
    /// non-UTC `now` with a fraction, the largest sizes, a week's validity (boto3 1.44.8
    /// with `aws_session_token="FQoG/+tok=="`).
    #[test]
    fn session_token_and_filename_key_match_boto3() {
        let secret = "s".repeat(70);
        let policy = PostPolicy {
            access_key: "ASIAEXAMPLE",
            secret_key: &secret,
            session_token: Some("FQoG/+tok=="),
            region: "ap-southeast-2",
            bucket: "b.ucket",
            key: "u/${filename}",
            content_type: "image/jpeg",
            min_size: 0,
            max_size: u64::MAX,
            now: OffsetDateTime::parse("2024-02-29T12:00:00.5+05:30", &Rfc3339).expect("RFC 3339"),
            expires_in: Duration::seconds(604_800),
        };
        assert_eq!(
            policy.document(),
            r#"{"expiration": "2024-03-07T06:30:00Z", "conditions": [["content-length-range", 0, 18446744073709551615], {"Content-Type": "image/jpeg"}, {"bucket": "b.ucket"}, ["starts-with", "$key", "u/"], {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, {"x-amz-credential": "ASIAEXAMPLE/20240229/ap-southeast-2/s3/aws4_request"}, {"x-amz-date": "20240229T063000Z"}, {"x-amz-security-token": "FQoG/+tok=="}]}"#
        );
        let want = [
            ("Content-Type", "image/jpeg"),
            ("key", "u/${filename}"),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
            (
                "x-amz-credential",
                "ASIAEXAMPLE/20240229/ap-southeast-2/s3/aws4_request",
            ),
            ("x-amz-date", "20240229T063000Z"),
            ("x-amz-security-token", "FQoG/+tok=="),
            (
                "policy",
                "eyJleHBpcmF0aW9uIjogIjIwMjQtMDMtMDdUMDY6MzA6MDBaIiwgImNvbmRpdGlvbnMiOiBbWyJjb250ZW50LWxlbmd0aC1yYW5nZSIsIDAsIDE4NDQ2NzQ0MDczNzA5NTUxNjE1XSwgeyJDb250ZW50LVR5cGUiOiAiaW1hZ2UvanBlZyJ9LCB7ImJ1Y2tldCI6ICJiLnVja2V0In0sIFsic3RhcnRzLXdpdGgiLCAiJGtleSIsICJ1LyJdLCB7IngtYW16LWFsZ29yaXRobSI6ICJBV1M0LUhNQUMtU0hBMjU2In0sIHsieC1hbXotY3JlZGVudGlhbCI6ICJBU0lBRVhBTVBMRS8yMDI0MDIyOS9hcC1zb3V0aGVhc3QtMi9zMy9hd3M0X3JlcXVlc3QifSwgeyJ4LWFtei1kYXRlIjogIjIwMjQwMjI5VDA2MzAwMFoifSwgeyJ4LWFtei1zZWN1cml0eS10b2tlbiI6ICJGUW9HLyt0b2s9PSJ9XX0=",
            ),
            (
                "x-amz-signature",
                "055195a7101556bd68f93ddb4dcde2dfe30b82865fc9bb3caa83daa2ce6ddc4e",
            ),
        ];
        let got = policy.fields();
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    /// Control characters, DEL, U+0080, U+2028, U+FFFD, the short escapes and two astral
    /// characters in the key; a short secret; a year boundary (boto3 1.44.8).
    #[test]
    fn escapes_match_boto3() {
        let policy = PostPolicy {
            access_key: "ASIAEXAMPLE",
            secret_key: "short",
            session_token: None,
            region: "ap-southeast-2",
            bucket: "b.ucket",
            key: "c\u{0}\u{1}\u{1f}\u{7f}\u{80}\u{2028}\u{fffd}\u{8}\u{c}\n\r/\u{1F600}\u{10FFFF}",
            content_type: "image/jpeg",
            min_size: 0,
            max_size: u64::MAX,
            now: OffsetDateTime::parse("1999-12-31T23:59:59Z", &Rfc3339).expect("RFC 3339"),
            expires_in: Duration::seconds(1),
        };
        assert_eq!(
            policy.document(),
            r#"{"expiration": "2000-01-01T00:00:00Z", "conditions": [["content-length-range", 0, 18446744073709551615], {"Content-Type": "image/jpeg"}, {"bucket": "b.ucket"}, {"key": "c\u0000\u0001\u001f\u007f\u0080\u2028\ufffd\b\f\n\r/\ud83d\ude00\udbff\udfff"}, {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, {"x-amz-credential": "ASIAEXAMPLE/19991231/ap-southeast-2/s3/aws4_request"}, {"x-amz-date": "19991231T235959Z"}]}"#
        );
        let fields = policy.fields();
        let signature = fields
            .iter()
            .find(|(name, _)| name == "x-amz-signature")
            .map(|(_, value)| value.as_str());
        assert_eq!(
            signature,
            Some("4264cc72cf7dd0841f381aa832b481d2221d28042a2054d60f6e15ffbacde5bf")
        );
    }

    /// The worked example of AWS's SigV4 documentation ("Derive a signing key").
    #[test]
    fn signing_key_matches_aws_example() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex_lower(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn json_string_escapes_like_python() {
        let escaped = |s: &str| {
            let mut out = String::new();
            json_string(&mut out, s);
            out
        };
        assert_eq!(escaped(""), r#""""#);
        assert_eq!(escaped("a/b c~"), r#""a/b c~""#);
        assert_eq!(escaped("\"\\"), r#""\"\\""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
        assert_eq!(escaped("é\u{2028}\u{ABCD}"), r#""\u00e9\u2028\uabcd""#);
        assert_eq!(escaped("😀"), r#""\ud83d\ude00""#);
    }

    #[test]
    fn debug_hides_secrets() {
        let policy = PostPolicy {
            access_key: "AKIDEXAMPLE",
            secret_key: "very-secret-key",
            session_token: Some("very-secret-token"),
            region: "us-east-1",
            bucket: "b",
            key: "k",
            content_type: "text/plain",
            min_size: 0,
            max_size: 1,
            now: OffsetDateTime::UNIX_EPOCH,
            expires_in: Duration::seconds(60),
        };
        let debug = format!("{policy:?}");
        assert!(debug.contains("AKIDEXAMPLE"));
        assert!(!debug.contains("very-secret"));
    }
}
