//! What a request that sends telemetry (`POST /v1/logs`, `/v1/traces`, `/v1/events`) may hold in memory, bounded
//! before anything is decoded. Every such request is admitted into one [`Budget`] (`[ingest] memory`) by weight:
//! first its body as sent, then more as its body inflates (a step at a time, within `[ingest] max_inflated`), then
//! what its decoded form is estimated to take, from a count of the body's items and tokens. A request that does not
//! fit waits up to 2 seconds for others to finish, then is told to come back (503 with `Retry-After`); one that
//! could never fit, or carries more than `[ingest] max_items` items, is refused (413). At most [`MAX_REQUESTS`] are
//! taken in at once, however small, as each holds a connection while it waits for storage.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::traces::otlp::Refusal;

/// How long a request waits for room, in all, before it is told to come back.
const WAIT: Duration = Duration::from_secs(2);
/// The budget is kept in units of this many bytes.
const UNIT: u64 = 1024;
/// A gzip body is inflated this much at a time, its admission growing with it.
const STEP: usize = 256 * 1024;
/// What one JSON token (`{`, `[`, `,` or `:`, each at most one value or member) may take once parsed: a
/// `serde_json::Value` in a vector that grows by doubling, or a map entry.
pub const JSON_TOKEN: u64 = 64;

/// Ingest requests taken in at once, however small: each holds a connection and waits for storage.
pub const MAX_REQUESTS: u32 = 32;

/// The memory all ingest requests at once may hold, and how many may be taken in at once.
#[derive(Clone)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    units: u32,
    requests: Arc<Semaphore>,
}

impl Budget {
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from((bytes / UNIT).max(1)).unwrap_or(u32::MAX).min(Semaphore::MAX_PERMITS as u32);
        let requests = Arc::new(Semaphore::new(MAX_REQUESTS as usize));
        Self { semaphore: Arc::new(Semaphore::new(units as usize)), units, requests }
    }

    /// A turn among the [`MAX_REQUESTS`] and room for `bytes`, waiting up to 2 seconds for both.
    pub async fn admit(&self, bytes: u64) -> Result<Admission, Refusal> {
        let deadline = Instant::now() + WAIT;
        let units = self.units_for(bytes)?;
        let turn = take(&self.requests, 1, deadline).await?;
        let permit = take(&self.semaphore, units, deadline).await?;
        Ok(Admission { budget: self.clone(), permit: Some(permit), _turn: turn, deadline, bytes })
    }

    fn units_for(&self, bytes: u64) -> Result<u32, Refusal> {
        let units = bytes.div_ceil(UNIT);
        match u32::try_from(units) {
            Ok(units) if units <= self.units => Ok(units),
            _ => Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request would take about {} in memory once decoded, more than `[ingest] memory` ({}); send it in smaller batches",
                    bytesize::ByteSize(bytes),
                    bytesize::ByteSize(u64::from(self.units) * UNIT)
                ),
            )),
        }
    }
}

async fn take(semaphore: &Arc<Semaphore>, units: u32, deadline: Instant) -> Result<OwnedSemaphorePermit, Refusal> {
    let busy = || {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "selfmon is taking in as much as `[ingest] memory` allows; retry shortly",
        )
    };
    match tokio::time::timeout_at(deadline, semaphore.clone().acquire_many_owned(units)).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(busy()),
    }
}

/// A request's room in the [`Budget`], given back when it is dropped.
pub struct Admission {
    budget: Budget,
    permit: Option<OwnedSemaphorePermit>,
    _turn: OwnedSemaphorePermit,
    deadline: Instant,
    /// What it holds room for so far.
    bytes: u64,
}

impl Admission {
    /// Hold room for `more` bytes besides what it holds already (what its body will take once decoded, say).
    pub async fn add(&mut self, more: u64) -> Result<(), Refusal> {
        self.hold(self.bytes.saturating_add(more)).await
    }

    /// Hold room for `bytes` in all, taking more if it holds less: at once if the budget has it, else by giving
    /// back what it holds and waiting, in turn, for all of it (until 2 seconds after it was admitted). Holding a part
    /// while waiting for the rest could leave every request holding a part and none able to go on.
    async fn hold(&mut self, bytes: u64) -> Result<(), Refusal> {
        let units = self.budget.units_for(bytes)?;
        self.bytes = self.bytes.max(bytes);
        let held = self.permit.as_ref().map_or(0, |p| u32::try_from(p.num_permits()).unwrap_or(u32::MAX));
        if units <= held {
            return Ok(());
        }
        if let (Some(permit), Ok(more)) =
            (self.permit.as_mut(), self.budget.semaphore.clone().try_acquire_many_owned(units - held))
        {
            permit.merge(more);
            return Ok(());
        }
        self.permit = None;
        self.permit = Some(take(&self.budget.semaphore, units, self.deadline).await?);
        Ok(())
    }
}

/// The body as sent, decompressed (`Content-Encoding: gzip` or none), refused past `max` bytes; the admission grows
/// with the inflated body, so that many requests inflating at once share the budget instead of each taking `max`.
pub async fn inflate(
    headers: &HeaderMap,
    body: &[u8],
    max: u64,
    admission: &mut Admission,
) -> Result<Vec<u8>, Refusal> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {} once decompressed (`[ingest] max_inflated`)", bytesize::ByteSize(max)),
        )
    };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" if body.len() as u64 > max => Err(too_large()),
        "identity" | "" => {
            admission.hold(2 * body.len() as u64).await?;
            Ok(body.to_vec())
        }
        "gzip" => {
            let mut decoder = flate2::read::GzDecoder::new(body);
            let mut inflated = Vec::new();
            loop {
                inflated.reserve_exact(STEP);
                admission.hold((body.len() + inflated.capacity()) as u64).await?;
                let read =
                    decoder.by_ref().take(STEP as u64).read_to_end(&mut inflated).map_err(|e| {
                        Refusal::new(StatusCode::BAD_REQUEST, format!("the body is not valid gzip: {e}"))
                    })?;
                if inflated.len() as u64 > max {
                    return Err(too_large());
                }
                if read == 0 {
                    return Ok(inflated);
                }
                // Inflating is work on the server's own threads: other requests get their turn between steps.
                tokio::task::yield_now().await;
            }
        }
        other => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("`Content-Encoding: {other}` is not supported: send gzip or nothing"),
        )),
    }
}

/// A 413 for a request of more than `max` items.
pub fn too_many(what: &str, max: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request holds more than {max} {what} (`[ingest] max_items`); send it in smaller batches"),
    )
}

/// What a body of `body` bytes will take once decoded, estimated from its shape: its text twice (the body and the
/// strings cut from it), each token at `per_token` and each item at `per_item`.
pub fn decoded(body: usize, shape: JsonShape, per_token: u64, per_item: usize) -> u64 {
    let items = (shape.items as u64).saturating_mul(per_item as u64);
    (2 * body as u64).saturating_add((shape.tokens as u64).saturating_mul(per_token)).saturating_add(items)
}

/// Lines of a text body, counted without splitting it: refused past `max`.
pub fn count_lines(body: &[u8], max: usize) -> Result<usize, Refusal> {
    let breaks = body.iter().filter(|&&b| b == b'\n').count();
    let lines = breaks + usize::from(body.last().is_some_and(|&b| b != b'\n'));
    if lines > max { Err(too_many("lines", max)) } else { Ok(lines) }
}

/// The shape of a JSON body, read without parsing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonShape {
    /// Elements of the first array met (the body itself, or the array of `{"events": [...]}`).
    pub items: usize,
    /// `{`, `[`, `,` and `:` outside strings: each starts at most one value or member once parsed.
    pub tokens: usize,
}

impl JsonShape {
    pub fn of(body: &[u8]) -> Self {
        let mut shape = Self::default();
        let (mut depth, mut outer) = (0usize, None::<usize>);
        let (mut in_string, mut escaped, mut outer_empty) = (false, false, true);
        for &byte in body {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            if outer == Some(depth) && !byte.is_ascii_whitespace() && byte != b']' {
                outer_empty = false;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    shape.tokens += 1;
                    depth += 1;
                    if byte == b'[' && outer.is_none() {
                        outer = Some(depth);
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b',' | b':' => {
                    shape.tokens += 1;
                    if byte == b',' && outer == Some(depth) {
                        shape.items += 1;
                    }
                }
                _ => {}
            }
        }
        if !outer_empty {
            shape.items += 1;
        }
        shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_shape_counts_the_outer_arrays_items_and_the_tokens_outside_strings() {
        assert_eq!(JsonShape::of(b"[]"), JsonShape { items: 0, tokens: 1 });
        assert_eq!(JsonShape::of(b" [ ] "), JsonShape { items: 0, tokens: 1 });
        assert_eq!(JsonShape::of(br#"[{"a":1},{"b":[1,2,3]}]"#), JsonShape { items: 2, tokens: 9 });
        assert_eq!(JsonShape::of(br#"{"events":[{"t":"x,y:[{"},{}]}"#).items, 2);
        assert_eq!(JsonShape::of(br#"["a\"],[", "b"]"#).items, 2);
        assert_eq!(JsonShape::of(b"[[0,0,0,0]]"), JsonShape { items: 1, tokens: 5 });
    }

    #[test]
    fn lines_are_counted_with_or_without_a_final_break() {
        assert_eq!(count_lines(b"", 10).unwrap(), 0);
        assert_eq!(count_lines(b"a\nb", 10).unwrap(), 2);
        assert_eq!(count_lines(b"a\nb\n", 10).unwrap(), 2);
        assert_eq!(count_lines(b"\n\n\n", 10).unwrap(), 3);
        let refused = count_lines(b"\n\n\n", 2).unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refused.message.contains("`[ingest] max_items`"), "{}", refused.message);
    }

    use proptest::prelude::*;

    /// Any JSON value, strings full of quotes, backslashes, brackets and commas included.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[\\[\\]{},:\"\\\\ a-z\\PC]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\\[\\],:\"]{0,6}", inner, 0..6)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The outer array's items are counted as a parser would find them, whatever its strings hold, pretty or
        /// compact.
        #[test]
        fn a_json_arrays_items_are_counted_as_parsed(items in proptest::collection::vec(json(), 0..12), pretty: bool) {
            let array = serde_json::Value::from(items.clone());
            let text = if pretty { serde_json::to_string_pretty(&array) } else { serde_json::to_string(&array) };
            prop_assert_eq!(JsonShape::of(text.unwrap().as_bytes()).items, items.len());
        }

        /// Lines are counted as the body is later split.
        #[test]
        fn lines_are_counted_as_split(text in "[a\\n\\r ]{0,40}") {
            prop_assert_eq!(count_lines(text.as_bytes(), usize::MAX).unwrap(), text.lines().count());
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn gzipped() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn a_body_inflates_within_its_limit_and_the_budget() {
        let budget = Budget::new(8 << 20);
        let mut admission = budget.admit(1024).await.unwrap();
        let body = inflate(&gzipped(), &gzip(&[b'x'; 100_000]), 1 << 20, &mut admission).await.unwrap();
        assert_eq!(body.len(), 100_000);

        // A bomb stops at the limit, not at its end.
        let bomb = gzip(&vec![b'\n'; 64 << 20]);
        let refused = inflate(&gzipped(), &bomb, 1 << 20, &mut admission).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refused.message.contains("`[ingest] max_inflated`"), "{}", refused.message);
        drop(admission);

        // Two requests cannot hold more than the budget: the second waits, then is told to come back.
        let budget = Budget::new(4 << 20);
        let mut first = budget.admit(1024).await.unwrap();
        inflate(&gzipped(), &gzip(&[b'y'; 3 << 20]), 8 << 20, &mut first).await.unwrap();
        let mut second = budget.admit(1024).await.unwrap();
        let busy = inflate(&gzipped(), &gzip(&[b'z'; 3 << 20]), 8 << 20, &mut second).await.unwrap_err();
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        let mut third = budget.admit(1024).await.unwrap();
        inflate(&gzipped(), &gzip(&[b'z'; 3 << 20]), 8 << 20, &mut third).await.unwrap();

        // What could never fit is refused at once.
        let refused = budget.admit(5 << 20).await.err().unwrap();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refused.message.contains("`[ingest] memory`"), "{}", refused.message);
    }
}
