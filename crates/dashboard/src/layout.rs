//! The frame every page shares: head, navigation bar, window picker,
//! headline figures, and the Content-Security-Policy the pages are served
//! with.

use maud::{DOCTYPE, Markup, html};

use crate::format::{Direction, Token};

/// Scripts and styles only from this server's own files; no inline script,
/// no inline style, no frames, no plugins, forms posting only here. The
/// scripts' requests go to this server's API only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The sections of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Market,
    Opportunities,
    Catalogue,
    Account,
    Log,
    /// A page not in the bar (a model's, a creator's).
    Elsewhere,
}

const NAVIGATION: [(Section, &str, &str); 5] = [
    (Section::Market, "/", "Market"),
    (Section::Opportunities, "/opportunities", "Opportunities"),
    (Section::Catalogue, "/catalogue", "Catalogue"),
    (Section::Account, "/account", "My account"),
    (Section::Log, "/log", "Log"),
];

/// A whole page.
pub fn page(title: &str, section: Section, token: &Token, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vitrine" }
                link rel="stylesheet" href=(crate::assets::path_of("style"));
                link rel="icon" href=(crate::assets::path_of("favicon")) type="image/svg+xml";
                script src=(crate::assets::path_of("app")) defer {}
            }
            body data-symbol=(token.symbol) data-decimals=(token.decimals) {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    a.brand href="/" { "Vitrine" }
                    nav aria-label="Sections" {
                        ul {
                            @for (s, href, label) in NAVIGATION {
                                li { a href=(href) aria-current=[(s == section).then_some("page")] { (label) } }
                            }
                        }
                    }
                }
                main id="main" { (body) }
                footer.bottom {
                    p { "Every figure here comes from the " a href="/v1/openapi.json" { "public API" } " and can be checked against the " a href="/log" { "log" } "." }
                }
            }
        }
    }
}

/// Links to the same page over each window, the current one marked.
pub fn window_picker(current: &str, windows: &[&str], href: impl Fn(&str) -> String) -> Markup {
    html! {
        nav.windows aria-label="Window" {
            @for window in windows {
                a href=(href(window)) aria-current=[(*window == current).then_some("true")] { (window_name(window)) }
            }
        }
    }
}

/// A window as people say it.
pub fn window_name(window: &str) -> &str {
    match window {
        "24h" => "24 hours",
        "7d" => "7 days",
        "30d" => "30 days",
        "all" => "all time",
        other => other,
    }
}

/// One headline figure, with its change against the window before. `live`
/// names the figure for the page's script to keep current.
pub fn headline(label: &str, value: &str, change: Option<(String, Direction)>, live: Option<&str>) -> Markup {
    html! {
        div.figure {
            dt { (label) }
            dd {
                span.value data-live=[live] { (value) }
                @if let Some((text, direction)) = change {
                    " " span class=(format!("change {}", direction.class())) title="against the window before" { (text) }
                }
            }
        }
    }
}

/// A figure that needs its scale said: the value, and one sentence of what
/// it measures and how to read it.
pub fn measure(label: &str, value: &str, meaning: &str) -> Markup {
    html! {
        div.figure {
            dt { (label) }
            dd { span.value { (value) } }
            dd.meaning { (meaning) }
        }
    }
}

/// A message in place of content that could not be had.
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_marks_its_section() {
        let token = Token { symbol: "OPG".into(), decimals: 9 };
        let html = page("Market", Section::Market, &token, html! { p { "hi" } }).into_string();
        assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
        assert!(html.contains(r#"<a href="/" aria-current="page">Market</a>"#), "{html}");
        assert!(html.contains(r#"<a href="/log">Log</a>"#));
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing from elsewhere");
        assert!(!html.contains("style=") && !html.contains("<script>"), "nothing inline the CSP would refuse");
    }
}
