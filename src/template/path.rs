//! Muster's path navigator (`ResolvePath`: dots and `[n]` indices) and the conversions between
//! JSON and the engine's values (ADR 0008).

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::Value as Tv;
use serde_json::{Map, Number, Value};

/// Follows `path` (`results.pods.items[0].name`) from `root`, with Muster's four error texts.
pub fn navigate<'a>(root: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut current = root;
    for segment in path.split('.') {
        let (key, indices) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            let Value::Object(map) = current else {
                return Err(format!("cannot access field {key:?}: not an object"));
            };
            current = map.get(key).ok_or_else(|| format!("field {key:?} not found"))?;
        }
        let mut rest = indices;
        while let Some(open) = rest.strip_prefix('[') {
            let close = open.find(']').ok_or_else(|| format!("malformed index in {segment:?}"))?;
            let index: usize = open[..close].parse().map_err(|_| format!("malformed index in {segment:?}"))?;
            let Value::Array(items) = current else {
                return Err(format!("cannot index {key:?}: not an array"));
            };
            current = items.get(index).ok_or_else(|| format!("index {index} out of range"))?;
            rest = &open[close + 1..];
        }
    }
    Ok(current)
}

/// JSON into the engine. Integral numbers become `Int` (Go prints a `float64` 3 as `3` too).
pub(super) fn to_template(value: &Value) -> Tv {
    match value {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Tv::Int(i),
            None => Tv::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Tv::String(Arc::from(s.as_str())),
        Value::Array(items) => Tv::List(items.iter().map(to_template).collect()),
        Value::Object(map) => {
            Tv::Map(Arc::new(map.iter().map(|(k, v)| (Arc::from(k.as_str()), to_template(v))).collect()))
        }
    }
}

/// An engine value back into JSON. An integral float becomes an integer, as Go's JSON writes it;
/// a non-finite float and a function become `null`.
pub(super) fn to_json(value: &Tv) -> Value {
    match value {
        Tv::Nil | Tv::Function(_) => Value::Null,
        Tv::Bool(b) => Value::Bool(*b),
        Tv::Int(i) => Value::from(*i),
        Tv::Uint(u) => Value::from(*u),
        Tv::Float(f) => float(*f),
        Tv::String(s) => Value::String(s.to_string()),
        Tv::List(items) => Value::Array(items.iter().map(to_json).collect()),
        Tv::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect::<Map<_, _>>()),
    }
}

fn float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation, reason = "integral and in range")]
        return Value::from(f as i64);
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A map value from its entries (sprig's `dict`).
pub(super) fn map(entries: BTreeMap<Arc<str>, Tv>) -> Tv {
    Tv::Map(Arc::new(entries))
}
