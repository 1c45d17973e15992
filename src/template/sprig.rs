//! The sprig subset Muster's workflows use (ADR 0008 §3), with sprig's semantics, and `eq ne lt
//! le gt ge` that compare an integer with a float numerically (ADR 0008 §4).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use gotmpl::{TemplateError, Value as Tv};

use super::path::{map, to_json, to_template};

/// The longest string `repeat` (or any function here) may build: 1 MiB (ADR 0008 §5).
pub(super) const MAX_STRING_BYTES: usize = 1024 * 1024;

type Result<T> = gotmpl::Result<T>;
type Func = fn(&[Tv]) -> Result<Tv>;

/// Every function registered on top of Go's builtins.
pub(super) fn functions() -> Vec<(&'static str, Func)> {
    vec![
        ("eq", eq),
        ("ne", |a| Ok(Tv::Bool(!truth(&eq(a)?)))),
        ("lt", |a| order("lt", a, |o| o.is_lt())),
        ("le", |a| order("le", a, |o| o.is_le())),
        ("gt", |a| order("gt", a, |o| o.is_gt())),
        ("ge", |a| order("ge", a, |o| o.is_ge())),
        ("int", |a| Ok(Tv::Int(to_int(arg(a, 0)?)))),
        ("int64", |a| Ok(Tv::Int(to_int(arg(a, 0)?)))),
        ("float64", |a| Ok(Tv::Float(to_float(arg(a, 0)?)))),
        ("toString", |a| Ok(string(text(arg(a, 0)?)))),
        ("add", |a| Ok(Tv::Int(a.iter().map(to_int).fold(0i64, i64::wrapping_add)))),
        ("sub", |a| Ok(Tv::Int(to_int(arg(a, 0)?).wrapping_sub(to_int(arg(a, 1)?))))),
        ("mul", |a| Ok(Tv::Int(a.iter().map(to_int).fold(1i64, i64::wrapping_mul)))),
        ("div", |a| divide("div", a, i64::checked_div)),
        ("mod", |a| divide("mod", a, i64::checked_rem)),
        ("max", |a| a.iter().map(to_int).max().map(Tv::Int).ok_or_else(|| wrong("max"))),
        ("min", |a| a.iter().map(to_int).min().map(Tv::Int).ok_or_else(|| wrong("min"))),
        ("upper", |a| Ok(string(text(arg(a, 0)?).to_uppercase()))),
        ("lower", |a| Ok(string(text(arg(a, 0)?).to_lowercase()))),
        ("title", |a| Ok(string(title(&text(arg(a, 0)?))))),
        ("trim", |a| Ok(string(text(arg(a, 0)?).trim().to_owned()))),
        ("trimAll", |a| {
            let cut = text(arg(a, 0)?);
            Ok(string(text(arg(a, 1)?).trim_matches(|c| cut.contains(c)).to_owned()))
        }),
        ("trimPrefix", |a| {
            let s = text(arg(a, 1)?);
            Ok(string(s.strip_prefix(text(arg(a, 0)?).as_str()).unwrap_or(&s).to_owned()))
        }),
        ("trimSuffix", |a| {
            let s = text(arg(a, 1)?);
            Ok(string(s.strip_suffix(text(arg(a, 0)?).as_str()).unwrap_or(&s).to_owned()))
        }),
        ("replace", |a| Ok(string(text(arg(a, 2)?).replace(&text(arg(a, 0)?), &text(arg(a, 1)?))))),
        ("repeat", repeat),
        ("contains", |a| Ok(Tv::Bool(text(arg(a, 1)?).contains(&text(arg(a, 0)?))))),
        ("hasPrefix", |a| Ok(Tv::Bool(text(arg(a, 1)?).starts_with(&text(arg(a, 0)?))))),
        ("hasSuffix", |a| Ok(Tv::Bool(text(arg(a, 1)?).ends_with(&text(arg(a, 0)?))))),
        ("split", |a| {
            let parts = text(arg(a, 1)?);
            let separator = text(arg(a, 0)?);
            let entries = parts.split(separator.as_str()).enumerate();
            Ok(map(entries.map(|(i, p)| (Arc::from(format!("_{i}").as_str()), string(p.to_owned()))).collect()))
        }),
        ("join", |a| {
            let Tv::List(items) = arg(a, 1)? else { return Ok(string(text(arg(a, 1)?))) };
            Ok(string(items.iter().map(text).collect::<Vec<_>>().join(&text(arg(a, 0)?))))
        }),
        ("quote", |a| Ok(string(a.iter().map(|v| format!("{:?}", text(v))).collect::<Vec<_>>().join(" ")))),
        ("squote", |a| Ok(string(a.iter().map(|v| format!("'{}'", text(v))).collect::<Vec<_>>().join(" ")))),
        ("toJson", |a| Ok(string(to_json(arg(a, 0)?).to_string()))),
        ("fromJson", |a| Ok(serde_json::from_str(&text(arg(a, 0)?)).map_or(Tv::Nil, |v| to_template(&v)))),
        ("b64enc", |a| Ok(string(base64::engine::general_purpose::STANDARD.encode(text(arg(a, 0)?))))),
        ("b64dec", |a| {
            let decoded = base64::engine::general_purpose::STANDARD.decode(text(arg(a, 0)?));
            Ok(string(decoded.map_or_else(|e| e.to_string(), |b| String::from_utf8_lossy(&b).into_owned())))
        }),
        ("default", |a| {
            let given = a.get(1).unwrap_or(&Tv::Nil);
            Ok(if empty(given) { arg(a, 0)?.clone() } else { given.clone() })
        }),
        ("empty", |a| Ok(Tv::Bool(a.first().is_none_or(empty)))),
        ("coalesce", |a| Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Tv::Nil))),
        ("ternary", |a| Ok(if truth(arg(a, 2)?) { arg(a, 0)? } else { arg(a, 1)? }.clone())),
        ("list", |a| Ok(Tv::List(a.iter().cloned().collect()))),
        ("dict", |a| {
            let pairs = a.chunks(2).map(|p| (Arc::from(text(&p[0]).as_str()), p.get(1).cloned().unwrap_or(Tv::Nil)));
            Ok(map(pairs.collect::<BTreeMap<_, _>>()))
        }),
        ("has", |a| Ok(Tv::Bool(matches!(arg(a, 1)?, Tv::List(l) if l.contains(arg(a, 0)?))))),
        ("keys", |a| {
            let keys = a.iter().flat_map(|m| match m {
                Tv::Map(m) => m.keys().map(|k| Tv::String(k.clone())).collect(),
                _ => Vec::new(),
            });
            Ok(Tv::List(keys.collect()))
        }),
        ("randAlphaNum", |a| {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let n = usize::try_from(to_int(arg(a, 0)?)).unwrap_or(0).min(MAX_STRING_BYTES);
            let pick = |_| char::from(ALPHABET[usize::from(rand::random::<u8>()) % ALPHABET.len()]);
            Ok(string((0..n).map(pick).collect()))
        }),
        ("now", |_| Ok(string(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)))),
        ("date", |a| {
            let when = match arg(a, 1)? {
                Tv::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| TemplateError::Exec(format!("date: {s:?} is not a time")))?
                    .with_timezone(&chrono::Utc),
                other => chrono::DateTime::from_timestamp(to_int(other), 0).unwrap_or_default(),
            };
            Ok(string(when.format(&go_layout(&text(arg(a, 0)?))).to_string()))
        }),
    ]
}

fn arg(args: &[Tv], at: usize) -> Result<&Tv> {
    args.get(at).ok_or_else(|| TemplateError::Exec(format!("wrong number of args: want at least {}", at + 1)))
}

fn wrong(name: &str) -> TemplateError {
    TemplateError::Exec(format!("wrong number of args for {name}: want at least 1 got 0"))
}

fn string(s: String) -> Tv {
    Tv::String(Arc::from(s.as_str()))
}

/// sprig's `toString`: a string as is, anything else as Go's `%v`.
fn text(value: &Tv) -> String {
    match value {
        Tv::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn truth(value: &Tv) -> bool {
    value.is_truthy()
}

fn empty(value: &Tv) -> bool {
    match value {
        Tv::Nil => true,
        Tv::Bool(b) => !b,
        Tv::Int(i) => *i == 0,
        Tv::Uint(u) => *u == 0,
        Tv::Float(f) => *f == 0.0,
        Tv::String(s) => s.is_empty(),
        Tv::List(l) => l.is_empty(),
        Tv::Map(m) => m.is_empty(),
        Tv::Function(_) => false,
    }
}

/// spf13/cast's `ToInt64`: numbers truncate, numeric strings parse, booleans are 0/1, else 0.
fn to_int(value: &Tv) -> i64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, reason = "Go's conversion")]
    match value {
        Tv::Int(i) => *i,
        Tv::Uint(u) => *u as i64,
        Tv::Float(f) => *f as i64,
        Tv::Bool(b) => i64::from(*b),
        Tv::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn to_float(value: &Tv) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "Go's conversion")]
    match value {
        Tv::Int(i) => *i as f64,
        Tv::Uint(u) => *u as f64,
        Tv::Float(f) => *f,
        Tv::Bool(b) => f64::from(u8::from(*b)),
        Tv::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn divide(name: &str, args: &[Tv], op: fn(i64, i64) -> Option<i64>) -> Result<Tv> {
    op(to_int(arg(args, 0)?), to_int(arg(args, 1)?))
        .map(Tv::Int)
        .ok_or_else(|| TemplateError::Exec(format!("error calling {name}: integer divide by zero")))
}

fn repeat(args: &[Tv]) -> Result<Tv> {
    let count = usize::try_from(to_int(arg(args, 0)?)).unwrap_or(0);
    let unit = text(arg(args, 1)?);
    if count.saturating_mul(unit.len()) > MAX_STRING_BYTES {
        return Err(TemplateError::Exec(format!(
            "error calling repeat: the result would exceed {MAX_STRING_BYTES} bytes"
        )));
    }
    Ok(string(unit.repeat(count)))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase())
        } else {
            out.push(c)
        }
        start = c.is_whitespace();
    }
    out
}

/// Go's `eq arg1 arg2 …`: true when `arg1` equals any other; numbers compare across int/float.
fn eq(args: &[Tv]) -> Result<Tv> {
    let first = arg(args, 0)?;
    if args.len() < 2 {
        return Err(TemplateError::Exec("wrong number of args for eq: want at least 2 got 1".into()));
    }
    for other in &args[1..] {
        if compare("eq", first, other)?.is_some_and(std::cmp::Ordering::is_eq) {
            return Ok(Tv::Bool(true));
        }
    }
    Ok(Tv::Bool(false))
}

fn order(name: &str, args: &[Tv], test: fn(std::cmp::Ordering) -> bool) -> Result<Tv> {
    if args.len() != 2 {
        return Err(TemplateError::Exec(format!("wrong number of args for {name}: want 2 got {}", args.len())));
    }
    match compare(name, &args[0], &args[1])? {
        Some(ordering) => Ok(Tv::Bool(test(ordering))),
        None => Err(TemplateError::Exec(format!("error calling {name}: invalid type for comparison"))),
    }
}

/// The ordering of two values, `None` when they are equal-comparable only (bools, nil, lists).
fn compare(name: &str, a: &Tv, b: &Tv) -> Result<Option<std::cmp::Ordering>> {
    let number = |v: &Tv| matches!(v, Tv::Int(_) | Tv::Uint(_) | Tv::Float(_));
    match (a, b) {
        (Tv::Int(x), Tv::Int(y)) => Ok(Some(x.cmp(y))),
        _ if number(a) && number(b) => Ok(to_float(a).partial_cmp(&to_float(b))),
        (Tv::String(x), Tv::String(y)) => Ok(Some(x.cmp(y))),
        (Tv::Bool(x), Tv::Bool(y)) if name == "eq" => Ok(Some(x.cmp(y))),
        (Tv::Nil, Tv::Nil) if name == "eq" => Ok(Some(std::cmp::Ordering::Equal)),
        (Tv::Nil, _) | (_, Tv::Nil) if name == "eq" => Ok(None),
        _ => Err(TemplateError::Exec(format!("error calling {name}: incompatible types for comparison"))),
    }
}

/// Go's reference-time layout (`2006-01-02T15:04:05Z07:00`) as a chrono format string.
fn go_layout(layout: &str) -> String {
    const TOKENS: [(&str, &str); 16] = [
        ("2006", "%Y"),
        ("Z07:00", "%:z"),
        ("-07:00", "%:z"),
        ("-0700", "%z"),
        ("January", "%B"),
        ("Monday", "%A"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        (".000", "%.3f"),
        ("01", "%m"),
        ("02", "%d"),
        ("15", "%H"),
        ("04", "%M"),
        ("05", "%S"),
        ("06", "%y"),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (go, chrono) in TOKENS {
            if let Some(after) = rest.strip_prefix(go) {
                out.push_str(chrono);
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == '%' {
            out.push_str("%%")
        } else {
            out.push(c)
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}
