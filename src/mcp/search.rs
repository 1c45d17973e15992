//! BM25 ranking of tools for `filter_tools(query=…)`, over each tool's name and one-line summary.

use std::collections::HashMap;

/// Splits on non-alphanumerics and camelCase, lowercased.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                tokens.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Scores each document against the query; documents that match no term score 0.
pub fn bm25(query: &str, documents: &[String]) -> Vec<f64> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let docs: Vec<Vec<String>> = documents.iter().map(|d| tokenize(d)).collect();
    let n = docs.len() as f64;
    let avg_len = docs.iter().map(Vec::len).sum::<usize>() as f64 / n.max(1.0);
    let mut df: HashMap<&str, usize> = HashMap::new();
    for doc in &docs {
        let mut seen: Vec<&str> = doc.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for term in seen {
            *df.entry(term).or_insert(0) += 1;
        }
    }
    let terms = tokenize(query);
    docs.iter()
        .map(|doc| {
            let len = doc.len() as f64;
            terms
                .iter()
                .map(|term| {
                    let tf = doc.iter().filter(|t| *t == term).count() as f64;
                    if tf == 0.0 {
                        return 0.0;
                    }
                    let df = *df.get(term.as_str()).unwrap_or(&0) as f64;
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len.max(1.0)))
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_snake_and_camel_case() {
        assert_eq!(tokenize("x_kubernetes_podsList get-Logs"), ["x", "kubernetes", "pods", "list", "get", "logs"]);
    }

    #[test]
    fn ranks_matching_documents_first() {
        let docs = vec![
            "x_kubernetes_pods_list List pods in a namespace".to_owned(),
            "x_prometheus_execute_query Run a PromQL query".to_owned(),
            "x_kubernetes_pods_log Get the logs of a pod".to_owned(),
        ];
        let scores = bm25("pod logs", &docs);
        assert!(scores[2] > scores[0], "{scores:?}");
        assert_eq!(scores[1], 0.0);
    }
}
