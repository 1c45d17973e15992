//! How the resource verbs print: `-o table` (default), `wide`, `json` or `yaml`.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(super) enum Format {
    #[default]
    Table,
    Wide,
    Json,
    Yaml,
}

/// A tool's answer in `format`. `rows` is the list a table shows (e.g. `mcpServers`), with
/// `columns` (JSON keys) and, for `wide`, `wide` more; a single object is shown as key: value lines.
pub(super) fn render(body: &Value, format: Format, rows: Option<&str>, columns: &[&str], wide: &[&str]) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(body).unwrap_or_default(),
        Format::Yaml => serde_saphyr::to_string(body).unwrap_or_default(),
        Format::Table | Format::Wide => {
            let mut columns = columns.to_vec();
            if format == Format::Wide {
                columns.extend_from_slice(wide);
            }
            match rows.and_then(|key| body.get(key)).and_then(Value::as_array) {
                Some(rows) => table(rows, &columns),
                None => fields(body),
            }
        }
    }
}

/// One object whose `key` list is shown as a table below its other fields (`-o table|wide`).
pub(super) fn render_with_list(body: &Value, format: Format, key: &str, columns: &[&str]) -> String {
    if matches!(format, Format::Json | Format::Yaml) {
        return render(body, format, None, &[], &[]);
    }
    let mut head = body.clone();
    let rows = head.as_object_mut().and_then(|o| o.remove(key));
    if let Some(object) = head.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    match rows.as_ref().and_then(Value::as_array) {
        Some(rows) if !rows.is_empty() => format!("{}\n\n{}", fields(&head), table(rows, columns)),
        _ => fields(&head),
    }
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.lines().next().unwrap_or_default().to_owned(),
        Some(other) => other.to_string(),
    }
}

fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|row| columns.iter().map(|c| cell(row.get(*c))).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        padded.join("   ").trim_end().to_owned()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

fn fields(body: &Value) -> String {
    match body.as_object() {
        Some(object) => object
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_wide_adds_some() {
        let body = json!({"services": [{"name": "a", "state": "Connected", "health": "healthy"}, {"name": "longer", "state": null}]});
        let out = render(&body, Format::Table, Some("services"), &["name", "state"], &["health"]);
        assert_eq!(out, "NAME     STATE\na        Connected\nlonger");
        let wide = render(&body, Format::Wide, Some("services"), &["name", "state"], &["health"]);
        assert!(wide.starts_with("NAME     STATE       HEALTH\n"), "{wide}");
        assert!(render(&body, Format::Json, None, &[], &[]).contains("\"services\""));
        assert_eq!(render(&json!({"name": "a"}), Format::Table, Some("x"), &[], &[]), "name: a");
    }

    #[test]
    fn a_record_shows_its_fields_then_its_steps_as_a_table() {
        let body = json!({"id": "e1", "status": "failed", "error": null,
                          "steps": [{"stepId": "a", "status": "completed"}, {"stepId": "b", "status": "failed"}]});
        let out = render_with_list(&body, Format::Table, "steps", &["stepId", "status"]);
        assert_eq!(out, "id: e1\nstatus: failed\n\nSTEPID   STATUS\na        completed\nb        failed");
        assert!(render_with_list(&body, Format::Json, "steps", &[]).contains("\"stepId\": \"b\""));
    }
}
