//! Go templates (`text/template`) in Muster workflows (ADR 0008), behind one small API so that
//! nothing else names the `gotmpl` crate.
//!
//! `crd` checks every template of a workflow at load time ([`check`]), so a syntax error is a
//! validation problem naming the workflow, the step and the field. `workflow` renders them:
//! [`render_text`] (Go's text), [`eval_typed`] (Muster's typed rule: a leaf's JSON type is the
//! value it evaluates to) and [`resolve`] (every template leaf of a JSON value), always with
//! `missingkey=error` and the sprig subset of `sprig.rs`.
//!
//! **Architecture Invariant:** a leaf: names no other muster module (`telemetry` aside).

mod path;
mod sprig;

use std::cell::RefCell;

use serde_json::Value;

pub use path::navigate;

/// The longest template source muster accepts (ADR 0008, limits).
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// The most iterations one render's `range` actions may take together.
const MAX_RANGE_ITERS: u64 = 10_000;

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("template is {0} bytes; at most 64 KiB is allowed")]
    TooLarge(usize),
    /// Go's own wording, e.g. `template: 1:10: unclosed action`.
    #[error("{0}")]
    Syntax(String),
    /// Go's wording where it has one, e.g. `map has no entry for key "x"`.
    #[error("{0}")]
    Render(String),
}

/// What templates see (`.input`, `.vars`, `.results`, `.context`), converted for the engine once.
pub struct Data {
    json: Value,
    engine: gotmpl::Value,
}

impl Data {
    pub fn new(json: Value) -> Self {
        let engine = path::to_template(&json);
        Self { json, engine }
    }

    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// Renders `source` to Go's text.
pub fn render_text(source: &str, data: &Data) -> Result<String, Error> {
    let out = engine(source)?.execute_to_string(&data.engine).map_err(render_error)?;
    if out.len() > sprig::MAX_STRING_BYTES {
        return Err(Error::Render(format!("the rendered text exceeds {} bytes", sprig::MAX_STRING_BYTES)));
    }
    Ok(out)
}

/// Muster's typed evaluation (`renderTypedTemplate`): a pure path (`{{ .results.pods.items }}`)
/// keeps its JSON value; a single action (`{{ len .x }}`) gives the value its pipeline ends with;
/// anything else is text. A string without `{{` is returned as it is.
pub fn eval_typed(source: &str, data: &Data) -> Result<Value, Error> {
    if !is_template(source) {
        return Ok(Value::String(source.to_owned()));
    }
    if let Some(found) = pure_path(source).and_then(|p| navigate(&data.json, p).ok()) {
        return Ok(found.clone());
    }
    let template = engine(source)?;
    let single = template.lookup("template").is_some_and(
        |tree| matches!(tree.nodes.as_slice(), [gotmpl::parse::Node::Action(action)] if action.pipe.decl.is_empty()),
    );
    let Some(inner) = single.then(|| action_body(source)).flatten() else {
        return render_text(source, data).map(Value::String);
    };
    let capturing = engine(&format!("{{{{ ({inner}) | __capture }}}}"))?;
    CAPTURED.with(|c| c.borrow_mut().take());
    capturing.execute_to_string(&data.engine).map_err(render_error)?;
    let captured = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or(gotmpl::Value::Nil);
    Ok(path::to_json(&captured))
}

/// Every template leaf of `value` through [`eval_typed`], maps and lists walked; `at` names the
/// field in messages (`args.namespace: map has no entry for key "x"`).
pub fn resolve(value: &Value, data: &Data, at: &str) -> Result<Value, Error> {
    let locate = |e: Error, key: &str| Error::Render(format!("{at}{key}: {e}"));
    match value {
        Value::String(s) if s.contains("{{") && s.contains("}}") => eval_typed(s, data).map_err(|e| locate(e, "")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| resolve(v, data, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve(v, data, &format!("{at}.{k}"))?)))
            .collect::<Result<serde_json::Map<_, _>, Error>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

thread_local! {
    /// The value `__capture` saw during the current (synchronous) render on this thread.
    static CAPTURED: RefCell<Option<gotmpl::Value>> = const { RefCell::new(None) };
}

/// A template with Muster's options: `missingkey=error`, the sprig subset, the range budget.
fn engine(source: &str) -> Result<gotmpl::Template, Error> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Error::TooLarge(source.len()));
    }
    let mut template = gotmpl::Template::new("template")
        .missing_key(gotmpl::MissingKey::Error)
        .max_range_iters(MAX_RANGE_ITERS)
        .func("__capture", |args| {
            let value = args.last().cloned().unwrap_or(gotmpl::Value::Nil);
            CAPTURED.with(|c| *c.borrow_mut() = Some(value));
            Ok(gotmpl::Value::String("".into()))
        });
    for (name, function) in sprig::functions() {
        template = template.func(name, function);
    }
    template.parse(source).map_err(|e| Error::Syntax(e.to_string()))
}

fn render_error(e: gotmpl::TemplateError) -> Error {
    Error::Render(match e {
        gotmpl::TemplateError::MissingKey { key } => format!("map has no entry for key {key:?}"),
        gotmpl::TemplateError::Exec(message) => message,
        other => other.to_string(),
    })
}

/// `results.pods.items[0]` from `{{ .results.pods.items[0] }}`: Muster's pure-reference pattern
/// `^\{\{\s*\.([A-Za-z0-9_][A-Za-z0-9_.\[\]-]*)\s*\}\}$`.
fn pure_path(source: &str) -> Option<&str> {
    let inner = source.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let path = inner.strip_prefix('.')?;
    let first = path.chars().next()?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.[]-".contains(c);
    ((first.is_ascii_alphanumeric() || first == '_') && path.chars().all(allowed)).then_some(path)
}

/// The pipeline of a template that is one action, trim markers removed: `len .x` from
/// `{{- len .x -}}`.
fn action_body(source: &str) -> Option<&str> {
    let trimmed = source.trim();
    let inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix("- ").unwrap_or(inner);
    let inner = inner.strip_suffix(" -").unwrap_or(inner).trim();
    (!inner.is_empty() && !inner.contains("}}")).then_some(inner)
}

/// Whether `text` holds a template action at all; plain text needs no engine.
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

/// Parses `source` as a Go template, as Muster's engine would before rendering it.
///
/// # Warning
/// Go checks function names at parse time; `gotmpl` checks them when rendering. An unknown
/// function is therefore not reported here yet: it fails at run time with Go's message.
pub fn check(source: &str) -> Result<(), Error> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Error::TooLarge(source.len()));
    }
    gotmpl::Template::new("").parse(source).map_err(|e| Error::Syntax(e.to_string()))?;
    check_blocks(source)
}

/// `if`/`range`/`with`/`define`/`block` each closed by one `end`, and `else` only inside one.
/// `gotmpl` 0.6.1 accepts an unclosed `{{ if }}` and a stray `{{ end }}` (it stops at either,
/// silently dropping the rest), where Go reports `unexpected EOF` and `unexpected {{end}}`.
fn check_blocks(source: &str) -> Result<(), Error> {
    let mut open: Vec<&str> = Vec::new();
    for (at, keyword) in actions(source) {
        match keyword {
            "if" | "range" | "with" | "define" | "block" => open.push(keyword),
            "else" | "end" if open.is_empty() => {
                return Err(syntax(source, at, &format!("unexpected {{{{{keyword}}}}}")));
            }
            "end" => {
                open.pop();
            }
            _ => {}
        }
    }
    if open.is_empty() { Ok(()) } else { Err(syntax(source, source.len(), "unexpected EOF")) }
}

/// Go's `template: line:col: message`, with 1-based line and column of byte offset `at`.
fn syntax(source: &str, at: usize, message: &str) -> Error {
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Error::Syntax(format!("template: {line}:{col}: {message}"))
}

/// The first word of each action, with its offset. Quoted strings, raw strings and comments
/// are skipped, so a `}}` inside them does not end the action.
fn actions(source: &str) -> Vec<(usize, &str)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(found) = source[i..].find("{{") {
        let start = i + found;
        let mut j = start + 2;
        if bytes.get(j) == Some(&b'-') {
            j += 1;
        }
        let body_start = j;
        // Find the closing `}}` outside strings and comments.
        while j < bytes.len() {
            match bytes[j] {
                b'"' => {
                    j += 1;
                    while j < bytes.len() && bytes[j] != b'"' {
                        j += if bytes[j] == b'\\' { 2 } else { 1 };
                    }
                }
                b'`' => {
                    j += 1;
                    while j < bytes.len() && bytes[j] != b'`' {
                        j += 1;
                    }
                }
                b'/' if bytes.get(j + 1) == Some(&b'*') => {
                    j = source[j..].find("*/").map_or(bytes.len(), |end| j + end + 1);
                }
                b'}' if bytes.get(j + 1) == Some(&b'}') => break,
                _ => {}
            }
            j += 1;
        }
        let body = source.get(body_start..j.min(bytes.len())).unwrap_or_default().trim_start();
        let word_end = body.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(body.len());
        out.push((start, &body[..word_end]));
        i = (j + 2).min(bytes.len());
    }
    out
}

#[cfg(test)]
mod tests;
