//! What one GraphQL request may ask for, checked before anything runs.
//!
//! - **Size.** With its fragments expanded, a document may select [`MAX_FIELDS`] fields at most. The expansion is
//!   measured once per fragment, so a document whose fragments spread each other many times over is refused
//!   without being expanded.
//! - **Depth.** Data nests [`MAX_DEPTH`] fields deep at most. Introspection (`__schema`, `__type`) may nest
//!   [`MAX_INTROSPECTION_DEPTH`] deep, enough for the `ofType` chains of the standard introspection query that
//!   GraphiQL, graphql-codegen and `gql` send, but may list a type's members (`fields`, `inputFields`,
//!   `interfaces`, `possibleTypes`, `enumValues`) only once on a path: listing within a listing multiplies the
//!   answer by the schema's size at every level.
//! - **Cost.** A request may cost [`MAX_COMPLEXITY`]. A field costs 1 plus what it selects; a list costs its
//!   `limit` times what each item selects; a field that scans stored data costs what it scans ([`scan`]: the log
//!   search by its time range, the trace search, which has none, as a whole scan); every alias is a field of its
//!   own.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Positioned, Request, ServerError, ServerResult, ValidationResult};

/// The deepest data may nest.
pub const MAX_DEPTH: usize = 10;
/// The deepest introspection may nest.
pub const MAX_INTROSPECTION_DEPTH: usize = 20;
/// The most fields a request may select once its fragments are expanded.
pub const MAX_FIELDS: usize = 5_000;
/// The most a request may cost.
pub const MAX_COMPLEXITY: usize = 1_000;

/// What a scan costs at least, however short its window.
const SCAN_BASE: usize = 50;
/// What the longest window a field allows costs on top of [`SCAN_BASE`]: two such scans are more than one request
/// may cost.
const SCAN_SPAN: usize = 450;

/// The cost of a field that scans `covered` of the `most` it may (hours, days, seconds: the same unit): between 50
/// and 500.
pub fn scan(covered: u64, most: u64) -> usize {
    let share = u128::from(covered.min(most)) * SCAN_SPAN as u128 / u128::from(most.max(1));
    SCAN_BASE + usize::try_from(share).unwrap_or(SCAN_SPAN)
}

/// The time a log search may cover in full: 30 days, the default log retention.
const LOG_WINDOW: u64 = 30 * 24 * 3600;

/// The cost of a log search over `from`..`to` (Unix seconds; open ends are the whole store), as [`scan`] counts.
pub fn log_scan(from: Option<f64>, to: Option<f64>) -> usize {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let covered = (to.unwrap_or(now) - from.unwrap_or(0.0)).max(0.0);
    // Saturating: a window longer than `u64` seconds is the whole store.
    scan(covered as u64, LOG_WINDOW)
}

/// The fields of `__Type` that list its members.
const LISTINGS: [&str; 5] = ["fields", "inputFields", "interfaces", "possibleTypes", "enumValues"];

/// Checks every request against the limits above.
pub struct Limits;

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limits)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    /// The document is parsed and measured here, before the schema walks it: the schema's own checks expand
    /// fragments at every spread.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        check_shape(request.parsed_query()?).map_err(|message| ServerError::new(message, None))?;
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if result.complexity > MAX_COMPLEXITY {
            return Err(vec![ServerError::new(
                format!(
                    "the query costs {}, more than the {MAX_COMPLEXITY} one request may: ask for fewer items, a \
                     shorter window or fewer aliases",
                    result.complexity
                ),
                None,
            )]);
        }
        Ok(result)
    }
}

/// The measure of a selection set, with its fragments expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// Fields selected, saturating.
    fields: usize,
    /// The longest path of data fields.
    depth: usize,
    /// The longest path from an introspection field down.
    introspection_depth: usize,
    /// The most listing fields on one path below an introspection field.
    introspection_listings: usize,
    /// The most listing fields on one path (outside introspection, for the introspection field above to take).
    listings: usize,
}

impl Shape {
    fn merge(self, other: Self) -> Self {
        Self {
            fields: self.fields.saturating_add(other.fields),
            depth: self.depth.max(other.depth),
            introspection_depth: self.introspection_depth.max(other.introspection_depth),
            introspection_listings: self.introspection_listings.max(other.introspection_listings),
            listings: self.listings.max(other.listings),
        }
    }
}

/// Refuse a document over the size or depth limits, or whose fragments spread themselves.
fn check_shape(document: &ExecutableDocument) -> Result<(), String> {
    let mut measure = Measure { document, known: HashMap::new(), open: Vec::new() };
    for (_, operation) in document.operations.iter() {
        let shape = measure.selection_set(&operation.node.selection_set)?;
        if shape.fields > MAX_FIELDS {
            return Err(format!(
                "the query selects {} fields once its fragments are expanded, more than the {MAX_FIELDS} one request \
                 may",
                shape.fields
            ));
        }
        if shape.depth > MAX_DEPTH {
            return Err(format!("the query nests {} fields deep, more than the {MAX_DEPTH} allowed", shape.depth));
        }
        if shape.introspection_depth > MAX_INTROSPECTION_DEPTH {
            return Err(format!(
                "the introspection query nests {} fields deep, more than the {MAX_INTROSPECTION_DEPTH} allowed",
                shape.introspection_depth
            ));
        }
        if shape.introspection_listings > 1 {
            return Err(format!(
                "introspection may list a type's {} once on a path, not within one another",
                LISTINGS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Measures selection sets, each fragment once.
struct Measure<'a> {
    document: &'a ExecutableDocument,
    known: HashMap<&'a str, Shape>,
    /// The fragments being measured, to find one that spreads itself.
    open: Vec<&'a str>,
}

impl<'a> Measure<'a> {
    fn selection_set(&mut self, set: &'a Positioned<SelectionSet>) -> Result<Shape, String> {
        let mut shape = Shape::default();
        for selection in &set.node.items {
            let item = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let inner = self.selection_set(&field.selection_set)?;
                    let name = field.name.node.as_str();
                    if name == "__schema" || name == "__type" {
                        Shape {
                            fields: inner.fields.saturating_add(1),
                            depth: 1,
                            introspection_depth: 1 + inner.depth.max(inner.introspection_depth),
                            introspection_listings: inner.listings.max(inner.introspection_listings),
                            listings: 0,
                        }
                    } else {
                        Shape {
                            fields: inner.fields.saturating_add(1),
                            depth: 1 + inner.depth,
                            listings: usize::from(LISTINGS.contains(&name)) + inner.listings,
                            ..inner
                        }
                    }
                }
                Selection::InlineFragment(fragment) => self.selection_set(&fragment.node.selection_set)?,
                Selection::FragmentSpread(spread) => self.fragment(spread.node.fragment_name.node.as_str())?,
            };
            shape = shape.merge(item);
        }
        Ok(shape)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Shape, String> {
        if let Some(shape) = self.known.get(name) {
            return Ok(*shape);
        }
        if self.open.contains(&name) {
            return Err(format!("the fragment `{name}` spreads itself"));
        }
        // An unknown fragment is validation's to report.
        let Some((_, fragment)) = self.document.fragments.iter().find(|(known, _)| known.as_str() == name) else {
            return Ok(Shape::default());
        };
        self.open.push(name);
        let shape = self.selection_set(&fragment.node.selection_set)?;
        self.open.pop();
        self.known.insert(name, shape);
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str) -> Result<(), String> {
        check_shape(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn fragments_that_multiply_are_measured_without_being_expanded() {
        // Each fragment spreads the next twice: 2^40 fields once expanded.
        let mut query = String::from("{ ...F0 }\n");
        for i in 0..40 {
            query.push_str(&format!("fragment F{i} on QueryRoot {{ ...F{} ...F{} }}\n", i + 1, i + 1));
        }
        query.push_str("fragment F40 on QueryRoot { status }\n");
        let error = shape(&query).unwrap_err();
        assert!(error.contains("fields once its fragments are expanded"), "{error}");
        let error = shape("{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }").unwrap_err();
        assert_eq!(error, "the fragment `A` spreads itself");
    }

    #[test]
    fn introspection_nests_deeper_but_lists_once_per_path() {
        let of_type = "ofType { ".repeat(9) + "name" + &" }".repeat(9);
        assert!(
            shape(&format!("{{ __schema {{ types {{ fields {{ args {{ type {{ {of_type} }} }} }} }} }} }}")).is_ok()
        );
        let error = shape("{ __schema { types { fields { type { fields { name } } } } } }").unwrap_err();
        assert!(error.contains("once on a path"), "{error}");
        let error = shape("{ __type(name: \"Check\") { possibleTypes { interfaces { name } } } }").unwrap_err();
        assert!(error.contains("once on a path"), "{error}");
        let data = "{ trace(traceId: \"t\") { roots { children { children { children { children { children { \
                    children { children { children { children { name } } } } } } } } } } } }";
        assert!(shape(data).unwrap_err().contains("nests 12 fields deep"));
    }

    #[test]
    fn a_scan_costs_its_share_of_the_longest_window() {
        assert_eq!(scan(0, 100), 50);
        assert_eq!(scan(50, 100), 275);
        assert_eq!(scan(100, 100), 500);
        assert_eq!(scan(u64::MAX, 100), 500, "past the longest window is refused when it runs; costed as the longest");
    }
}
