//! A trace's spans as trees: each span under its parent, in start order, with its self time; a span whose parent
//! was not received, is nested too deep or is in a parent cycle (a malformed export) is shown as a root.

use std::collections::HashMap;

use crate::logs::StoredRecord;
use crate::traces::profile::self_times;
use crate::traces::{MAX_DEPTH, Span, Trace, millis, rfc3339_nanos};

/// The spans of one trace (by start time) as trees, with self times, and its summary.
pub fn tree(trace_id: String, spans: Vec<Span>, logs: Vec<StoredRecord>) -> Trace {
    let index: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let parents: Vec<Option<usize>> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| s.parent_id.as_deref().and_then(|p| index.get(p).copied()).filter(|p| *p != i))
        .collect();
    let shape: Vec<(i64, i64, Option<usize>)> =
        spans.iter().zip(&parents).map(|(s, p)| (s.start_ns, (s.duration_ms * 1e6).round() as i64, *p)).collect();
    let own = self_times(&shape);
    let first = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let last = shape.iter().map(|(start, duration, _)| start.saturating_add(*duration)).max().unwrap_or(first);
    let mut services: Vec<String> = spans.iter().map(|s| s.service.clone()).collect();
    services.sort();
    services.dedup();
    let span_count = spans.len();
    let error_count = spans.iter().filter(|s| s.status == "error").count();
    // Children are attached from the last span back, so every span is complete before its parent takes it; a
    // parent cycle (a malformed export) leaves its spans as roots.
    let mut slots: Vec<Option<Span>> = spans
        .into_iter()
        .zip(&own)
        .map(|(mut span, own)| {
            span.self_time_ms = millis(*own);
            Some(span)
        })
        .collect();
    let depths = depths(&parents);
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(depths[i]));
    for i in order {
        if let Some(parent) = parents[i]
            && (1..=MAX_DEPTH).contains(&depths[i])
            && let Some(child) = slots[i].take()
            && let Some(parent) = slots[parent].as_mut()
        {
            parent.children.push(child);
        }
    }
    let mut roots: Vec<Span> = slots.into_iter().flatten().collect();
    sort_children(&mut roots);
    Trace {
        trace_id,
        start: rfc3339_nanos(first),
        duration_ms: millis(last - first),
        span_count,
        error_count,
        services,
        roots,
        logs: logs.into_iter().rev().collect(),
    }
}

/// How many ancestors each span has; 0 for a span in a parent cycle. Each span is walked once.
fn depths(parents: &[Option<usize>]) -> Vec<usize> {
    let mut known: Vec<Option<usize>> = vec![None; parents.len()];
    let mut on_path = vec![false; parents.len()];
    for start in 0..parents.len() {
        let mut path = Vec::new();
        let mut at = Some(start);
        // The depth where the walk stopped: a root's parent (-1 as 0 ancestors above), a known span, or a cycle.
        let (base, cycle) = loop {
            match at {
                None => break (0, false),
                Some(i) if known[i].is_some() => break (known[i].unwrap_or(0) + 1, false),
                Some(i) if on_path[i] => break (0, true),
                Some(i) => {
                    on_path[i] = true;
                    path.push(i);
                    at = parents[i];
                }
            }
        };
        for (steps, i) in path.iter().rev().enumerate() {
            on_path[*i] = false;
            known[*i] = Some(if cycle { 0 } else { base + steps });
        }
    }
    known.into_iter().map(Option::unwrap_or_default).collect()
}

fn sort_children(spans: &mut [Span]) {
    spans.sort_by_key(|s| s.start_ns);
    for span in spans {
        sort_children(&mut span.children);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_are_counted_once_and_cycles_are_roots() {
        // 0 <- 1 <- 2, 3 alone, 4 <-> 5 a cycle, 6 under the cycle.
        let parents = [None, Some(0), Some(1), None, Some(5), Some(4), Some(5)];
        assert_eq!(depths(&parents), vec![0, 1, 2, 0, 0, 0, 1]);
        let chain: Vec<Option<usize>> = (0..100_000usize).map(|i| i.checked_sub(1)).collect();
        assert_eq!(depths(&chain)[99_999], 99_999);
    }
}
