//! Plans: Stripe price ids → a plan name, its seats, storage bytes and feature flags; the
//! `free` plan applies without a subscription (and after one ends).
//!
//! One rule for the free plan, with or without a plans file: a `[plans.free]` in the file
//! says what it grants; otherwise it is the built-in one, [`default_free`] (unlimited seats,
//! 1 GiB of storage) or the one the caller passes to [`Plans::from_toml_with_free`] (the
//! reference server passes unlimited seats and its `TENANTKIT_STORAGE_QUOTA_BYTES`, the same
//! plan it uses when there is no plans file at all).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One plan's entitlements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The Stripe prices that buy it.
    #[serde(default)]
    pub stripe_prices: Vec<String>,
    /// Seats (members plus pending invitations); `None`: unlimited.
    #[serde(default)]
    pub seats: Option<u64>,
    /// Storage bytes (files plus pending uploads); `None`: unlimited.
    #[serde(default)]
    pub storage_bytes: Option<u64>,
    /// Feature flags.
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    #[serde(default = "default_grace")]
    past_due_grace_days: i64,
    #[serde(default)]
    plans: BTreeMap<String, Plan>,
}

fn default_grace() -> i64 {
    7
}

/// The configured plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans {
    plans: BTreeMap<String, Plan>,
    /// Days a `past_due` subscription keeps its plan (Stripe retries the payment meanwhile).
    pub past_due_grace_days: i64,
    /// Whether the plans file defined `[plans.free]` (else the built-in free plan applies).
    free_configured: bool,
}

/// The built-in free plan: unlimited seats, 1 GiB of storage, no features. It applies
/// whenever no `[plans.free]` is configured, with or without a plans file.
pub fn default_free() -> Plan {
    FREE_FALLBACK.clone()
}

static FREE_FALLBACK: Plan = Plan {
    stripe_prices: Vec::new(),
    seats: None,
    storage_bytes: Some(1024 * 1024 * 1024),
    features: Vec::new(),
};

impl Default for Plans {
    /// Only the built-in free plan ([`default_free`]).
    fn default() -> Self {
        Self::with_free(default_free())
    }
}

impl Plans {
    /// Only the free plan, granting `free` (no plans file).
    pub fn with_free(free: Plan) -> Self {
        let mut plans = BTreeMap::new();
        plans.insert(tenantkit_core::PlanName::FREE.to_owned(), free);
        Self {
            plans,
            past_due_grace_days: default_grace(),
            free_configured: false,
        }
    }

    /// The free plan: what it grants, and whether a plans file defined it (`false`: the
    /// built-in one).
    pub fn free(&self) -> (&Plan, bool) {
        (
            self.named(tenantkit_core::PlanName::FREE).1,
            self.free_configured,
        )
    }

    /// Parses a plans file (TOML):
    ///
    /// ```toml
    /// past_due_grace_days = 7
    /// [plans.free]
    /// seats = 3
    /// storage_bytes = 104857600
    /// [plans.pro]
    /// stripe_prices = ["price_123"]
    /// seats = 25
    /// storage_bytes = 10737418240
    /// features = ["sso"]
    /// ```
    ///
    /// A file without `[plans.free]` gets the built-in [`default_free`].
    ///
    /// # Errors
    /// [`Error::Config`] for invalid TOML, an invalid plan name, a price in two plans, or a
    /// price on the free plan.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_with_free(text, default_free())
    }

    /// [`Plans::from_toml`], with `free` as the free plan unless the file defines
    /// `[plans.free]`: pass the free plan used without a plans file, so that adding a file
    /// for paid plans changes nothing about the free one.
    ///
    /// # Errors
    /// As [`Plans::from_toml`].
    pub fn from_toml_with_free(text: &str, free: Plan) -> Result<Self> {
        let file: PlansFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("plans file: {e}")))?;
        let mut plans = file.plans;
        for name in plans.keys() {
            tenantkit_core::PlanName::parse(name)
                .map_err(|_| Error::Config(format!("plans file: invalid plan name {name:?}")))?;
        }
        let free_configured = plans.contains_key(tenantkit_core::PlanName::FREE);
        let free = plans
            .entry(tenantkit_core::PlanName::FREE.to_owned())
            .or_insert(free);
        if !free.stripe_prices.is_empty() {
            return Err(Error::Config(
                "plans file: the free plan has no price".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for plan in plans.values() {
            for price in &plan.stripe_prices {
                if !seen.insert(price.clone()) {
                    return Err(Error::Config(format!(
                        "plans file: price {price} is in two plans"
                    )));
                }
            }
        }
        Ok(Self {
            plans,
            past_due_grace_days: file.past_due_grace_days.max(0),
            free_configured,
        })
    }

    /// The plan a price buys.
    pub fn for_price(&self, price: &str) -> Option<(&str, &Plan)> {
        self.plans
            .iter()
            .find(|(_, plan)| plan.stripe_prices.iter().any(|p| p == price))
            .map(|(name, plan)| (name.as_str(), plan))
    }

    /// The Stripe price that buys the plan named `name` (its first), if it has one.
    pub fn price_of(&self, name: &str) -> Option<&str> {
        self.plans
            .get(name)
            .and_then(|plan| plan.stripe_prices.first())
            .map(String::as_str)
    }

    /// The plan named `name`, or the free plan for an unknown name.
    pub fn named(&self, name: &str) -> (&str, &Plan) {
        self.plans
            .get_key_value(name)
            .or_else(|| self.plans.get_key_value(tenantkit_core::PlanName::FREE))
            .map(|(n, p)| (n.as_str(), p))
            .unwrap_or((tenantkit_core::PlanName::FREE, &FREE_FALLBACK))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_file() {
        let plans = Plans::from_toml(
            "past_due_grace_days = 3\n[plans.pro]\nstripe_prices = [\"price_pro\"]\nseats = 25\nfeatures = [\"sso\"]\n",
        )
        .unwrap();
        assert_eq!(plans.for_price("price_pro").unwrap().0, "pro");
        assert_eq!(plans.for_price("price_other"), None);
        assert_eq!(plans.price_of("pro"), Some("price_pro"));
        assert_eq!(plans.price_of("free"), None);
        assert_eq!(plans.price_of("nope"), None);
        assert_eq!(plans.named("nope").0, "free");
        assert_eq!(plans.named("free").1, &default_free());
        assert_eq!(plans.past_due_grace_days, 3);
        for bad in [
            "[plans.pro]\nseats = \"x\"",
            "[plans.free]\nstripe_prices = [\"p\"]",
            "[plans.a]\nstripe_prices = [\"p\"]\n[plans.b]\nstripe_prices = [\"p\"]",
            "[plans.\"Bad Name\"]\n",
            "[plans.pro]\nunknown = 1",
        ] {
            assert!(Plans::from_toml(bad).is_err(), "{bad}");
        }
    }

    /// One rule for the free plan: without `[plans.free]` it is the same plan whether there
    /// is a plans file (for paid plans) or none.
    #[test]
    fn the_free_plan_is_the_same_with_or_without_a_plans_file() {
        let built_in = Plans::default();
        let with_file = Plans::from_toml("[plans.pro]\nstripe_prices = [\"price_pro\"]\n").unwrap();
        assert_eq!(built_in.free(), (&default_free(), false));
        assert_eq!(with_file.free(), built_in.free());
        assert_eq!(with_file.free().0.seats, None, "seats are unlimited");
        assert_eq!(
            with_file.named("free").1.storage_bytes,
            Some(1024 * 1024 * 1024)
        );
        // The caller's free plan (the server's: its storage quota) applies to both alike.
        let server_free = Plan {
            storage_bytes: Some(42),
            ..default_free()
        };
        let without_file = Plans::with_free(server_free.clone());
        let with_file = Plans::from_toml_with_free(
            "[plans.pro]\nstripe_prices = [\"price_pro\"]\n",
            server_free.clone(),
        )
        .unwrap();
        assert_eq!(with_file.free(), without_file.free());
        assert_eq!(with_file.free(), (&server_free, false));
        // A `[plans.free]` says what it grants.
        let configured =
            Plans::from_toml_with_free("[plans.free]\nseats = 3\n", server_free).unwrap();
        let (free, from_file) = configured.free();
        assert_eq!(
            (free.seats, free.storage_bytes, from_file),
            (Some(3), None, true)
        );
    }
}
