//! Go templates (`text/template`) in Muster workflows (ADR 0008), behind one small API so that
//! nothing else names the `gotmpl` crate.
//!
//! This part parses only: `crd` checks every template of a workflow at load time, so a syntax
//! error is a validation problem naming the workflow, the step and the field. Rendering (the
//! sprig subset, `missingkey=error`, typed evaluation) comes with workflow execution.
//!
//! **Architecture Invariant:** a leaf: names no other muster module (`telemetry` aside).

/// The longest template source muster accepts (ADR 0008, limits).
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("template is {0} bytes; at most 64 KiB is allowed")]
    TooLarge(usize),
    /// Go's own wording, e.g. `template: 1:10: unclosed action`.
    #[error("{0}")]
    Syntax(String),
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
mod tests {
    use super::*;

    #[test]
    fn muster_expressions_parse() {
        for source in [
            "{{ .input.clusters }}",
            "{{ eq .input.env \"production\" }}",
            "{{ (index .result.items 0).kind }}",
            "{{ len .results.pods.items }}",
            "{{ printf \"%02d\" 8 }}",
            "{{ if eq .input.severity \"critical\" }}page{{ else }}mail{{ end }}",
            "{{ range .input.target_environments }}{{ . }}{{ end }}",
            "{{- .input.name | lower -}}",
            "{{ repeat 400000 \"x\" }}",
        ] {
            assert_eq!(check(source), Ok(()), "{source}");
        }
    }

    #[test]
    fn syntax_errors_use_gos_words() {
        let Err(Error::Syntax(message)) = check("{{ .input.x ") else { panic!("accepted") };
        assert!(message.starts_with("template: "), "{message}");
        assert!(message.contains("unclosed action"), "{message}");
        assert_eq!(check("{{ if .a }}x"), Err(Error::Syntax("template: 1:13: unexpected EOF".into())));
        assert_eq!(check("a\n {{ end }}"), Err(Error::Syntax("template: 2:2: unexpected {{end}}".into())));
        assert_eq!(check("{{- else -}}"), Err(Error::Syntax("template: 1:1: unexpected {{else}}".into())));
        // Strings and comments may hold anything.
        assert_eq!(check("{{ if eq .a \"}}{{ end\" }}{{/* {{ end }} */}}{{ `{{if` }}{{ end }}"), Ok(()));
    }

    #[test]
    fn huge_sources_are_refused_before_parsing() {
        let source = "x".repeat(MAX_SOURCE_BYTES + 1);
        assert_eq!(check(&source), Err(Error::TooLarge(MAX_SOURCE_BYTES + 1)));
    }
}
