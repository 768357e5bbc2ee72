//! Plans: Stripe price ids → a plan name, its seats, storage bytes and feature flags; the
//! built-in `free` plan applies without a subscription (and after one ends).

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
}

/// The built-in free plan's entitlements when the plans file does not define `free`.
pub fn default_free() -> Plan {
    Plan {
        stripe_prices: Vec::new(),
        seats: Some(5),
        storage_bytes: Some(1024 * 1024 * 1024),
        features: Vec::new(),
    }
}

impl Default for Plans {
    fn default() -> Self {
        let mut plans = BTreeMap::new();
        plans.insert(tenantkit_core::PlanName::FREE.to_owned(), default_free());
        Self {
            plans,
            past_due_grace_days: default_grace(),
        }
    }
}

impl Plans {
    /// Only the free plan, granting `free`.
    pub fn with_free(free: Plan) -> Self {
        let mut plans = Self::default();
        plans
            .plans
            .insert(tenantkit_core::PlanName::FREE.to_owned(), free);
        plans
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
    /// # Errors
    /// [`Error::Config`] for invalid TOML, an invalid plan name, a price in two plans, or a
    /// price on the free plan.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: PlansFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("plans file: {e}")))?;
        let mut plans = file.plans;
        for name in plans.keys() {
            tenantkit_core::PlanName::parse(name)
                .map_err(|_| Error::Config(format!("plans file: invalid plan name {name:?}")))?;
        }
        let free = plans
            .entry(tenantkit_core::PlanName::FREE.to_owned())
            .or_insert_with(default_free);
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

static FREE_FALLBACK: Plan = Plan {
    stripe_prices: Vec::new(),
    seats: Some(5),
    storage_bytes: Some(1024 * 1024 * 1024),
    features: Vec::new(),
};

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
}
