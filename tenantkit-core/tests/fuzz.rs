//! Fuzzing the kernel's parsers of network input (ids, cursors, page sizes, emails, slugs,
//! plan names, trusted-proxy lists and forwarding headers): any input is answered with a value
//! or a validation error, never a panic, and what is accepted keeps its invariants.

use std::net::IpAddr;

use proptest::prelude::*;
use tenantkit_core::testing::fuzz::{check, hostile_string};
use tenantkit_core::{
    Cursor, Email, Error, PageRequest, PlanName, Slug, TenantId, TrustedProxies, UserId,
};

fn validation_only(result: &Result<impl Sized, Error>) -> Result<(), TestCaseError> {
    match result {
        Ok(_) | Err(Error::Validation(_)) => Ok(()),
        Err(other) => Err(TestCaseError::fail(format!(
            "not a validation error: {other:?}"
        ))),
    }
}

#[test]
fn ids_parse_only_their_hyphenated_form() {
    check("ids", 2048, hostile_string(), |text| {
        if let Ok(id) = text.parse::<TenantId>() {
            prop_assert_eq!(
                id.to_string(),
                text.to_ascii_lowercase(),
                "only the canonical form"
            );
        }
        let json = serde_json::Value::String(text.clone());
        let from_json = serde_json::from_value::<UserId>(json);
        prop_assert_eq!(from_json.is_ok(), text.parse::<UserId>().is_ok());
        Ok(())
    });
    check("uuids", 512, any::<[u8; 16]>(), |bytes| {
        let uuid = uuid::Uuid::from_bytes(bytes);
        let id: TenantId = uuid
            .hyphenated()
            .to_string()
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(id.to_string(), uuid.hyphenated().to_string());
        prop_assert!(uuid.simple().to_string().parse::<TenantId>().is_err());
        prop_assert!(uuid.urn().to_string().parse::<TenantId>().is_err());
        Ok(())
    });
}

#[test]
fn cursors_and_limits_answer_validation_errors() {
    check(
        "page query",
        2048,
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(hostile_string()),
        ),
        |(limit, cursor)| {
            let page = PageRequest::from_query(limit, cursor.as_deref());
            validation_only(&page)?;
            if let Ok(page) = page {
                prop_assert!((1..=100).contains(&page.limit.get()));
            }
            Ok(())
        },
    );
    check("cursor round trip", 512, any::<[u8; 16]>(), |bytes| {
        let cursor = Cursor::after(uuid::Uuid::from_bytes(bytes));
        let decoded =
            Cursor::decode(&cursor.encode()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(decoded, cursor);
        Ok(())
    });
    // Bytes that decode as base64 but are not ours: refused, never misread.
    check(
        "foreign base64",
        1024,
        proptest::collection::vec(any::<u8>(), 0..40),
        |raw| {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
            let decoded = Cursor::decode(&text);
            let ours = raw.len() == 17 && raw[0] == 1;
            prop_assert_eq!(decoded.is_ok(), ours, "{:?}", raw);
            Ok(())
        },
    );
}

#[test]
fn emails_slugs_and_plans_validate_or_refuse() {
    check("text values", 2048, hostile_string(), |text| {
        let email = Email::parse(&text);
        validation_only(&email)?;
        if let Ok(email) = email {
            prop_assert!(email.as_str().len() <= 254 && email.as_str().contains('@'));
            prop_assert_eq!(email.as_str(), email.as_str().to_lowercase());
            prop_assert_eq!(
                Email::parse(email.as_str()).ok(),
                Some(email.clone()),
                "stable"
            );
        }
        let slug = Slug::parse(&text);
        validation_only(&slug)?;
        // Any name makes a valid slug.
        let derived = Slug::from_name(&text);
        prop_assert!(
            Slug::parse(derived.as_str()).is_ok(),
            "{} from {:?}",
            derived,
            text
        );
        validation_only(&PlanName::parse(&text))?;
        Ok(())
    });
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        // IPv4-mapped IPv6, which must count as the IPv4 address.
        any::<[u8; 4]>().prop_map(|b| IpAddr::from(std::net::Ipv4Addr::from(b).to_ipv6_mapped())),
    ]
}

/// A forwarding header value: real addresses, ports, brackets, quotes, obfuscated names and
/// garbage, joined by the separators of both formats.
fn forwarding_value() -> impl Strategy<Value = String> {
    let hop = prop_oneof![
        ip().prop_map(|ip| ip.to_string()),
        ip().prop_map(|ip| match ip {
            IpAddr::V4(v4) => format!("{v4}:443"),
            IpAddr::V6(v6) => format!("\"[{v6}]:443\""),
        }),
        ip().prop_map(|ip| format!("for={ip}")),
        ip().prop_map(|ip| format!("for=\"{ip}\";proto=https;by=_hidden")),
        Just("unknown".to_owned()),
        Just("_obfuscated".to_owned()),
        hostile_string(),
    ];
    proptest::collection::vec(hop, 0..40).prop_map(|hops| hops.join(", "))
}

#[test]
fn forwarding_headers_name_the_peer_or_an_address_they_carry() {
    check("proxy lists", 2048, hostile_string(), |text| {
        let _ = text.parse::<TrustedProxies>();
        Ok(())
    });
    let trusted: TrustedProxies = "10.0.0.0/8, 192.168.0.0/16, ::1, fd00::/8"
        .parse()
        .expect("proxies");
    check(
        "forwarded",
        2048,
        (ip(), forwarding_value(), forwarding_value(), any::<bool>()),
        |(peer, forwarded, x_forwarded_for, trust_peer)| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in [
                ("forwarded", &forwarded),
                ("x-forwarded-for", &x_forwarded_for),
            ] {
                if let Ok(value) = http::HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            let peer = if trust_peer {
                "10.9.8.7".parse().expect("ip")
            } else {
                peer
            };
            let client = trusted.client(peer, &headers);
            if trusted.trusts(peer) {
                let named = client == peer.to_canonical()
                    || forwarded.contains(&client.to_string())
                    || x_forwarded_for.contains(&client.to_string());
                prop_assert!(named, "{} from neither the peer nor the headers", client);
            } else {
                prop_assert_eq!(client, peer.to_canonical(), "an untrusted peer gets no say");
            }
            // With no proxies trusted, the headers never matter.
            prop_assert_eq!(
                TrustedProxies::default().client(peer, &headers),
                peer.to_canonical()
            );
            Ok(())
        },
    );
}
