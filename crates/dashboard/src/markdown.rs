//! Creators' Markdown cards: rendered by pulldown-cmark, then cleaned by
//! ammonia, the ecosystem's HTML sanitizer, so that nothing a creator writes
//! can run a script, load a frame or style the page. The page's
//! Content-Security-Policy would stop a script anyway; this is the first wall.

use maud::{Markup, PreEscaped};
use pulldown_cmark::{Options, Parser, html};

/// A card as safe HTML.
pub fn card(markdown: &str) -> Markup {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut unsafe_html = String::new();
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    let clean = ammonia::Builder::default()
        .url_schemes(["http", "https", "mailto"].into())
        .link_rel(Some("nofollow noopener noreferrer"))
        .clean(&unsafe_html)
        .to_string();
    PreEscaped(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders() {
        let html = card("# Sentiment\n\nA **small** model.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n").into_string();
        assert!(html.contains("<h1>Sentiment</h1>") && html.contains("<strong>small</strong>"));
        assert!(html.contains("<table>") && html.contains("<td>2</td>"), "{html}");
    }

    #[test]
    fn nothing_in_a_card_can_run() {
        let hostile = [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[click](javascript:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<svg><script>alert(1)</script></svg>",
            "<p style=\"position:fixed\" onclick=\"alert(1)\">x</p>",
            "<form action=\"https://evil.example\"><input name=key></form>",
            "![x](data:text/html;base64,PHNjcmlwdD4=)",
            "<object data=\"x\"></object><embed src=\"x\">",
            "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\">",
        ];
        for text in hostile {
            let html = card(text).into_string().to_lowercase();
            for banned in [
                "<script",
                "onerror",
                "onclick",
                "javascript:",
                "<iframe",
                "style=",
                "<form",
                "<input",
                "data:",
                "<object",
                "<embed",
                "<meta",
            ] {
                assert!(!html.contains(banned), "{text:?} gave {html:?}");
            }
        }
        let link = card("[docs](https://example.org)").into_string();
        assert!(link.contains(r#"href="https://example.org""#) && link.contains("noopener"), "{link}");
    }
}
