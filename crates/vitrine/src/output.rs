//! Terminal output: aligned tables for people, raw JSON for scripts.

use domain::{Amount, DEFAULT_DECIMALS, DEFAULT_TOKEN_SYMBOL};
use serde_json::Value;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Key–value lines for one record.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        println!("{key:<width$}  {value}");
    }
}

pub fn json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A value, or "-" for none.
pub fn or_dash(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A JSON value as a short cell: strings without quotes, null as "-".
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `[1, 4]` from a tensor's shape.
pub fn shape(dims: &[usize]) -> String {
    let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// `[N, 4]` from a signature's shape, its symbols by name.
pub fn dims(dims: &[server::wire::DimView]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|d| match d {
            server::wire::DimView::Fixed(n) => n.to_string(),
            server::wire::DimView::Symbol(s) => s.clone(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The first few elements of a data array (its JSON text), and how many
/// more there are.
pub fn preview(data: &str, shown: usize) -> String {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(data) else { return data.to_owned() };
    let head: Vec<String> = items.iter().take(shown).map(cell).collect();
    if items.len() > shown {
        format!("[{}, … {} more]", head.join(", "), items.len() - shown)
    } else {
        format!("[{}]", head.join(", "))
    }
}

/// The server's token (symbol, decimals), once a command has asked it
/// (`/v1/health`); the defaults until then.
static TOKEN: std::sync::OnceLock<(String, u32)> = std::sync::OnceLock::new();

/// Sets the token amounts are shown and read in, for this process.
pub fn set_token(symbol: String, decimals: u32) {
    let _ = TOKEN.set((symbol, decimals));
}

/// Decimal places of the server's token.
pub fn token_decimals() -> u32 {
    TOKEN.get().map_or(DEFAULT_DECIMALS, |(_, decimals)| *decimals)
}

/// An amount of minor units (a JSON string, or a number such as a median,
/// rounded to a whole unit) in tokens with the symbol, as people read it:
/// `"2110900000"` is `2.1109 OPG`. Anything else as is.
pub fn tokens(value: &Value) -> String {
    let symbol = TOKEN.get().map_or(DEFAULT_TOKEN_SYMBOL, |(symbol, _)| symbol.as_str());
    let minor_units = match value {
        Value::Number(number) => {
            number.as_f64().filter(|n| *n >= 0.0).map(|n| Amount::from_minor_units(n.round() as u64))
        }
        other => other.as_str().map(Amount::parse_minor_units),
    };
    match minor_units.and_then(Result::ok) {
        Some(amount) => format!("{} {symbol}", amount.to_decimal_string(token_decimals())),
        None => cell(value),
    }
}

/// An amount of minor units in tokens with the symbol (`480` is
/// `0.00000048 OPG`): what people read; JSON and CSV keep minor units.
pub fn tokens_of(minor_units: impl std::fmt::Display) -> String {
    tokens(&Value::String(minor_units.to_string()))
}
