//! The small HTML pages a person sees at muster's sign-in endpoints: what failed, in words, and
//! never a link or redirect to an unregistered URI. The frontend adds the security headers
//! (`frontend/oauth.rs`); the page itself loads nothing (no scripts, styles inline, CSP `default-src 'none'`).

/// A page with a title and one paragraph, both escaped.
pub fn render(title: &str, message: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} - muster</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}</style></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>\n",
        title = escape(title),
        message = escape(message),
    )
}

/// The Content-Security-Policy of every page: nothing loads, nothing frames it, forms go nowhere.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_what_it_shows() {
        let page = super::render("Sign-in failed", "client <script>alert(1)</script> is unknown");
        assert!(page.contains("client &lt;script&gt;alert(1)&lt;/script&gt; is unknown"), "{page}");
        assert!(!page.contains("<script>"));
    }
}
