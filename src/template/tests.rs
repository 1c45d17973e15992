//! Unit tests of `template`: parsing, typed evaluation, text rendering and the sprig subset.

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

fn data() -> Data {
    let results = serde_json::json!({
        "pods": {"items": [{"metadata": {"name": "web-0"}}, {"metadata": {"name": "web-1"}}], "count": 2},
        "r": {"build": 8.0, "ratio": 0.5},
        "risky": {"success": false, "isError": true},
        "pods_0": {"n": 1},
    });
    Data::new(serde_json::json!({
        "input": {"clusters": ["a", "b"], "env": "production", "replicas": 3.0, "name": "My App", "image": "a/b"},
        "vars": {"cluster": "a", "cluster_index": 0},
        "results": results.clone(),
        "context": results,
    }))
}

fn typed(source: &str) -> Value {
    eval_typed(source, &data()).unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn text(source: &str) -> String {
    render_text(source, &data()).unwrap_or_else(|e| panic!("{source}: {e}"))
}

#[test]
fn a_pure_path_keeps_its_json_type_at_any_depth() {
    use serde_json::json;
    assert_eq!(typed("{{ .input.clusters }}"), json!(["a", "b"]));
    assert_eq!(typed("{{ .results.pods.items[1].metadata.name }}"), json!("web-1"));
    assert_eq!(typed("{{ .results.risky.success }}"), json!(false));
    assert_eq!(typed("{{.results.pods_0}}"), json!({"n": 1}));
    assert_eq!(typed("{{ .vars.cluster_index }}"), json!(0));
    assert_eq!(typed("{{ .context.risky.isError }}"), json!(true));
}

#[test]
fn a_single_action_gives_the_value_of_its_pipeline() {
    use serde_json::json;
    assert_eq!(typed("{{ len .results.pods.items }}"), json!(2));
    assert_eq!(typed("{{ eq .input.env \"production\" }}"), json!(true));
    assert_eq!(typed("{{ printf \"%02d\" 8 }}"), json!("08"));
    assert_eq!(typed("{{ (index .results.pods.items 0).metadata.name }}"), json!("web-0"));
    assert_eq!(typed("{{ add .results.pods.count 1 }}"), json!(3));
    assert_eq!(typed("{{- .input.name | lower -}}"), json!("my app"));
    // A pure path returns the stored JSON number as it is.
    assert_eq!(typed("{{ .input.replicas }}"), json!(3.0));
}

#[test]
fn mixed_text_and_control_flow_render_to_strings_never_guessed() {
    use serde_json::json;
    assert_eq!(typed("n={{ len .input.clusters }}"), json!("n=2"));
    assert_eq!(typed("{{ len .input.clusters }}{{ len .input.clusters }}"), json!("22"));
    assert_eq!(typed("{{ if eq .input.env \"production\" }}true{{ end }}"), json!("true"));
    assert_eq!(typed("plain"), json!("plain"));
}

#[test]
fn missing_keys_fail_with_gos_words() {
    for source in ["{{ .context.non_existent_value }}", "{{ .vars.missing }}", "x {{ .input.nope }}"] {
        let error = eval_typed(source, &data()).expect_err(source).to_string();
        assert!(error.contains("map has no entry for key \""), "{source}: {error}");
    }
    let error = render_text("{{ .results.p1 }}", &data()).expect_err("p1").to_string();
    assert_eq!(error, "map has no entry for key \"p1\"");
}

#[test]
fn text_rendering_of_go_values() {
    assert_eq!(text("{{ .results.r.ratio }}"), "0.5");
    assert_eq!(text("{{ .results.risky.success }}"), "false");
    assert_eq!(text("{{ .results.pods_0 }}"), "map[n:1]");
    assert_eq!(text("{{ range .input.clusters }}[{{ . }}]{{ end }}"), "[a][b]");
    assert_eq!(text("{{ printf \"%d.%d\" (int .results.r.build) 2 }}"), "8.2");
}

#[test]
fn numbers_compare_across_int_and_float() {
    // Muster's documented `gt .input.replicas 1` (a JSON float against an int literal).
    assert_eq!(text("{{ gt .input.replicas 1 }}"), "true");
    assert_eq!(text("{{ eq .results.r.ratio 0.5 }}"), "true");
    assert_eq!(text("{{ ne .input.env \"staging\" }}"), "true");
    assert_eq!(text("{{ and (eq .input.env \"production\") (gt .input.replicas 2) }}"), "true");
    let error = render_text("{{ lt .input.env 1 }}", &data()).expect_err("string vs int").to_string();
    assert!(error.contains("incompatible types for comparison"), "{error}");
}

#[test]
fn the_sprig_subset() {
    assert_eq!(text("{{ .input.image | replace \"/\" \"-\" }}"), "a-b");
    assert_eq!(text("{{ \"  x \" | trim }}"), "x");
    assert_eq!(text("{{ upper \"ab\" }}{{ lower \"CD\" }}"), "ABcd");
    assert_eq!(text("{{ add 40 2 }} {{ sub 5 2 }} {{ mul 2 3 }} {{ div 7 2 }} {{ mod 7 2 }}"), "42 3 6 3 1");
    assert_eq!(text("{{ int \"12\" }} {{ int 3.9 }}"), "12 3");
    assert_eq!(text("{{ b64enc \"hi\" }} {{ b64dec \"aGk=\" }}"), "aGk= hi");
    assert_eq!(text("{{ randAlphaNum 8 | len }}"), "8");
    assert_eq!(text("{{ default \"d\" \"\" }} {{ default \"d\" \"v\" }} {{ empty \"\" }}"), "d v true");
    assert_eq!(text("{{ ternary \"y\" \"n\" true }} {{ coalesce \"\" \"c\" }}"), "y c");
    assert_eq!(text("{{ join \",\" .input.clusters }} {{ has \"a\" .input.clusters }}"), "a,b true");
    assert_eq!(text("{{ toJson .results.pods_0 }} {{ (fromJson \"{\\\"a\\\":1}\").a }}"), "{\"n\":1} 1");
    assert_eq!(text("{{ quote \"x\" }} {{ squote \"y\" }} {{ title \"ab cd\" }}"), "\"x\" 'y' Ab Cd");
    assert_eq!(
        text("{{ trimPrefix \"a-\" \"a-b\" }} {{ trimSuffix \"-b\" \"a-b\" }} {{ contains \"b\" \"abc\" }}"),
        "b a true"
    );
    assert_eq!(text("{{ repeat 3 \"x\" }}"), "xxx");
    assert_eq!(text("{{ \"2026-12-05T19:10:25Z\" | date \"2006-01-02\" }}"), "2026-12-05");
    assert_eq!(text("{{ now | date \"2006\" | len }}"), "4");
    let error = render_text("{{ repeat 2000000 \"x\" }}", &data()).expect_err("too long").to_string();
    assert!(error.contains("exceed"), "{error}");
    assert!(render_text("{{ repeat 400000 \"x\" }}", &data()).is_ok());
    let error = render_text("{{ nosuch 1 }}", &data()).expect_err("unknown function").to_string();
    assert!(error.contains("nosuch"), "{error}");
}

#[test]
fn resolve_walks_maps_and_lists_and_names_the_field() {
    use serde_json::json;
    let args =
        json!({"clusters": "{{ .input.clusters }}", "n": 3, "list": ["{{ .vars.cluster }}", "x"], "s": "plain {{"});
    assert_eq!(
        resolve(&args, &data(), "args").expect("resolves"),
        json!({"clusters": ["a", "b"], "n": 3, "list": ["a", "x"], "s": "plain {{"})
    );
    let error = resolve(&json!({"ns": "{{ .input.nope }}"}), &data(), "args").expect_err("missing").to_string();
    assert_eq!(error, "args.ns: map has no entry for key \"nope\"");
}

#[test]
fn navigate_reports_muster_errors() {
    use serde_json::json;
    let root = json!({"a": {"b": [1, 2]}, "s": "x"});
    assert_eq!(navigate(&root, "a.b[1]"), Ok(&json!(2)));
    assert!(navigate(&root, "a.c").unwrap_err().contains("not found"));
    assert!(navigate(&root, "s.x").unwrap_err().contains("not an object"));
    assert!(navigate(&root, "a[0]").unwrap_err().contains("not an array"));
    assert!(navigate(&root, "a.b[5]").unwrap_err().contains("out of range"));
}
