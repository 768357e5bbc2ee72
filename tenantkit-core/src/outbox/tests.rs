//! Unit tests of the outbox.

use super::At;
use time::macros::datetime;

/// RFC 3339 as `time` writes it misorders these as text (`…:05Z` after `…:05.1Z`,
/// `…:05.5Z` after `…:05.51Z`); the fixed-width form stored on SQLite does not.
#[test]
fn sqlite_times_compare_as_text_in_time_order() {
    let times = [
        datetime!(2026-01-02 03:04:05 UTC),
        datetime!(2026-01-02 03:04:05.1 UTC),
        datetime!(2026-01-02 04:04:05.2 +01:00),
        datetime!(2026-01-02 03:04:05.5 UTC),
        datetime!(2026-01-02 03:04:05.51 UTC),
        datetime!(2026-01-02 03:04:05.999999 UTC),
        datetime!(2026-01-02 03:04:06 UTC),
    ];
    let texts: Vec<String> = times.iter().map(|t| At::new(*t).text()).collect();
    assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
    assert_eq!(texts[0], "2026-01-02T03:04:05.000000Z");
    // Read back as sqlx decodes it, it is the same instant.
    for (t, text) in times.iter().zip(&texts) {
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
        assert_eq!(parsed, *t);
    }
}
