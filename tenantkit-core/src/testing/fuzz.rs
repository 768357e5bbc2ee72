//! The workspace's fuzz harness: property tests (proptest, on stable Rust) over every parser
//! that reads the network. Each crate's `tests/fuzz.rs` feeds its parsers hostile input from
//! the strategies here and checks they answer (an error is fine) without panicking, without
//! a 5xx, and within their documented bounds.
//!
//! Runs are reproducible: the seed is fixed unless `TENANTKIT_FUZZ_SEED` (a `u64`) picks
//! another, and `TENANTKIT_FUZZ_CASES` multiplies the number of cases for a longer hunt
//! (`TENANTKIT_FUZZ_CASES=20 TENANTKIT_FUZZ_SEED=$RANDOM cargo test --test fuzz`). A failure
//! prints its shrunk input and the seed that found it.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// The seed used unless `TENANTKIT_FUZZ_SEED` is set.
pub const DEFAULT_SEED: u64 = 0x7e4a_4e75_6b69_7402;

fn seed() -> u64 {
    std::env::var("TENANTKIT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn scale() -> u32 {
    std::env::var("TENANTKIT_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// A deterministic runner for `cases` cases (times `TENANTKIT_FUZZ_CASES`) whose sequence is
/// the seed's and `name`'s (so every check explores its own inputs). Nothing is persisted
/// between runs: the seed reproduces a failure.
pub fn runner(name: &str, cases: u32) -> TestRunner {
    let config = Config {
        cases: cases.saturating_mul(scale()),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    // FNV-1a of the name, beside the seed: stable across platforms and releases.
    let salt = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed().to_le_bytes());
    bytes[8..16].copy_from_slice(&salt.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `test` on `cases` inputs from `strategy`.
///
/// # Panics
/// When `test` fails or panics on an input: the message names `name`, the shrunk input and
/// the seed.
pub fn check<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = runner(name, cases);
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => panic!(
            "fuzz {name}: {reason}\n  input: {input:?}\n  seed: {} (TENANTKIT_FUZZ_SEED)",
            seed()
        ),
        Err(TestError::Abort(reason)) => panic!("fuzz {name} aborted: {reason}"),
    }
}

/// `cases` values from `strategy` for the check `name`, for async checks that cannot run
/// inside [`TestRunner::run`] (HTTP round trips): no shrinking, but the same reproducible
/// seed.
pub fn samples<S: Strategy>(name: &str, cases: u32, strategy: S) -> Vec<S::Value> {
    let mut runner = runner(name, cases);
    let cases = runner.config().cases;
    (0..cases)
        .filter_map(|_| {
            strategy
                .new_tree(&mut runner)
                .ok()
                .map(|tree| tree.current())
        })
        .collect()
}

/// Strings a parser should expect from an attacker: any Unicode, control characters, the
/// separators of the formats we read (`.`, `=`, `;`, `,`, `%`, quotes), long repeats and
/// near-misses of real values (base64url, UUIDs, numbers).
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        3 => "[ -~]{0,80}",
        2 => "[A-Za-z0-9_\\-=.]{0,120}",
        2 => "[0-9a-fA-F\\-{}]{0,48}",
        1 => "[.,;=%\"'\\\\ \t\r\n\u{0}\u{7f}\u{feff}\u{202e}]{0,40}",
        1 => "-?[0-9]{1,30}(\\.[0-9]{0,10})?(e[+-]?[0-9]{1,4})?",
        1 => (any::<char>(), 0usize..5000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Bytes that may not be UTF-8 at all.
pub fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        hostile_string().prop_map(String::into_bytes),
    ]
}

/// Any JSON value: scalars at the edges of their ranges, long and odd strings, deep and wide
/// arrays and objects.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(hostile_string(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object built from `valid` with its fields mutated: one dropped, one replaced by any
/// JSON value, one unknown added, or the whole object replaced; the shapes that get past a
/// body's first check and reach its deeper ones.
pub fn mutated_object(valid: serde_json::Value) -> impl Strategy<Value = serde_json::Value> {
    let keys: Vec<String> = valid
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let key_count = keys.len().max(1);
    let base = valid.clone();
    (0..4u8, 0..key_count, json_value(), hostile_string()).prop_map(
        move |(how, index, value, name)| {
            let mut object = base.as_object().cloned().unwrap_or_default();
            let key = keys.get(index).cloned();
            match (how, key) {
                (0, Some(key)) => {
                    object.remove(&key);
                }
                (1, Some(key)) => {
                    object.insert(key, value);
                }
                (2, _) => {
                    object.insert(name, value);
                }
                _ => return value,
            }
            serde_json::Value::Object(object)
        },
    )
}
