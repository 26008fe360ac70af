//! Lines posted to `POST /v1/logs` (for a `kind = "http"` source, or any name): the body is a JSON array, whose
//! strings are lines and whose objects are JSON lines, or text with a line per line. The API hands the body here
//! and the lines to the [ingest](crate::logs::ingest) path.

/// The lines of a body, and how many items of a JSON array were neither a string nor an object (left out); an
/// error names what is wrong with a body that looks like an array but is not one.
pub fn lines(body: &[u8]) -> Result<(Vec<String>, usize), String> {
    let text = String::from_utf8_lossy(body);
    if !text.trim_start().starts_with('[') {
        return Ok((text.lines().map(str::to_string).collect(), 0));
    }
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("the body starts like a JSON array but is not one: {e}"))?;
    let mut lines = Vec::with_capacity(items.len());
    let mut rejected = 0;
    for item in items {
        match item {
            serde_json::Value::String(line) => lines.push(line),
            object @ serde_json::Value::Object(_) => lines.push(object.to_string()),
            _ => rejected += 1,
        }
    }
    Ok((lines, rejected))
}
