//! What AI usage costs: the price table of `[ai]` (US dollars per million input and output tokens, the shipped
//! defaults under the operator's own), a model's entry in it, the provider and model as metric labels, and the
//! `[ai]` table checked ([`check_config`]).

use std::collections::BTreeMap;

use crate::config::{AiConfig, Price};

/// The price table shipped with selfmon: US dollars per million tokens, from the providers' published price
/// lists (<https://openai.com/api/pricing>, <https://www.anthropic.com/pricing#api>), standard tier.
pub const DEFAULT_PRICES: [(&str, f64, f64); 24] = [
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4-turbo", 10.0, 30.0),
    ("gpt-4", 30.0, 60.0),
    ("gpt-3.5-turbo", 0.5, 1.5),
    ("o1", 15.0, 60.0),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-haiku", 0.25, 1.25),
];

/// Model names to prices, matched exactly or by the longest entry a reported name starts with
/// (`gpt-4o-2024-08-06` is `gpt-4o`, `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`).
#[derive(Debug, Clone, Default)]
pub struct Prices {
    /// Longest names first.
    table: Vec<(String, Price)>,
}

impl Prices {
    pub fn from_config(ai: &AiConfig) -> Self {
        let mut table: BTreeMap<String, Price> = BTreeMap::new();
        if ai.default_prices {
            for (model, input, output) in DEFAULT_PRICES {
                table.insert(model.into(), Price { input, output });
            }
        }
        for (model, price) in &ai.prices {
            table.insert(model.to_ascii_lowercase(), *price);
        }
        let mut table: Vec<(String, Price)> = table.into_iter().collect();
        table.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self { table }
    }

    /// The model's table entry and price; a provider prefix (`openai/gpt-4o`) is ignored.
    pub fn lookup(&self, model: &str) -> Option<(&str, Price)> {
        let model = model.to_ascii_lowercase();
        let model = model.rsplit('/').next().unwrap_or(&model);
        self.table
            .iter()
            .find(|(name, _)| {
                model == name
                    || model.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(['-', '@', ':', '.']))
            })
            .map(|(name, price)| (name.as_str(), *price))
    }

    /// What the tokens cost in US dollars, when the model has a price.
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Option<f64> {
        self.lookup(model)
            .map(|(_, price)| (input_tokens as f64 * price.input + output_tokens as f64 * price.output) / 1e6)
    }
}

/// Checks `[ai]`; every problem is named.
pub fn check_config(ai: &AiConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(budget) = ai.monthly_budget
        && (!budget.is_finite() || budget < 0.0)
    {
        problems.push("`[ai] monthly_budget` must be a number of dollars, 0 or more".into());
    }
    for (model, price) in &ai.prices {
        if !(price.input.is_finite() && price.output.is_finite() && price.input >= 0.0 && price.output >= 0.0) {
            problems.push(format!("`[ai.prices]` `{model}`: prices must be dollars per million tokens, 0 or more"));
        }
        if model.trim().is_empty() {
            problems.push("`[ai.prices]` has an empty model name".into());
        }
    }
    problems
}

/// Providers as the OpenTelemetry GenAI conventions name them (`gen_ai.provider.name`); others are `other` in
/// metric labels.
const PROVIDERS: [&str; 14] = [
    "openai",
    "anthropic",
    "azure.ai.openai",
    "azure.ai.inference",
    "aws.bedrock",
    "gcp.gemini",
    "gcp.vertex_ai",
    "gcp.gen_ai",
    "cohere",
    "mistral_ai",
    "groq",
    "deepseek",
    "perplexity",
    "x_ai",
];

/// The provider and model of an AI usage event as metric labels: a known provider or `other`, the model's price
/// table entry or `other` (a label per invented name would grow without bound).
pub fn labels(prices: &Prices, provider: Option<&str>, model: Option<&str>) -> (String, String) {
    let provider = provider.unwrap_or_default();
    let provider = PROVIDERS.iter().find(|p| **p == provider).copied().unwrap_or("other");
    let model = model.and_then(|m| prices.lookup(m)).map_or("other", |(name, _)| name);
    (provider.to_string(), model.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_take_the_longest_price_entry_they_start_with() {
        let mut ai = AiConfig::default();
        ai.prices.insert("gpt-4o".into(), Price { input: 5.0, output: 15.0 });
        ai.prices.insert("my-finetune".into(), Price { input: 1.0, output: 2.0 });
        let prices = Prices::from_config(&ai);
        assert_eq!(prices.lookup("gpt-4o-2024-08-06").map(|p| p.0), Some("gpt-4o"));
        assert_eq!(prices.lookup("gpt-4o-mini-2024-07-18").map(|p| p.0), Some("gpt-4o-mini"));
        assert_eq!(prices.lookup("openai/GPT-4o").map(|p| p.0), Some("gpt-4o"));
        assert_eq!(prices.lookup("claude-3-5-sonnet-20241022").map(|p| p.0), Some("claude-3-5-sonnet"));
        assert_eq!(prices.lookup("gpt-4oz"), None, "a different model, not a version of gpt-4o");
        assert_eq!(prices.lookup("llama-3"), None);
        // 1200 input and 300 output tokens at the operator's $5 and $15 per million.
        let cost = prices.cost("gpt-4o", 1200, 300).unwrap();
        assert!((cost - (1200.0 * 5.0 + 300.0 * 15.0) / 1e6).abs() < 1e-12, "{cost}");
        let none = Prices::from_config(&AiConfig { default_prices: false, ..AiConfig::default() });
        assert_eq!(none.lookup("gpt-4o"), None);
    }
}
