//! Numbers as people read them: counts with thousands separators, token
//! amounts from minor units (exactly, never through floating point),
//! percentages, changes against a previous window, latencies.

/// The market's token: amounts are integers of 10^-`decimals` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub symbol: String,
    pub decimals: u32,
}

impl Token {
    /// `minor` (a decimal integer string, as the API gives amounts) as
    /// tokens: `"2110900000"` with 9 decimals is `2.1109 OPG`. Exact: the
    /// fraction keeps every non-zero digit. Text that is not an amount is
    /// shown as it is.
    pub fn amount(&self, minor: &str) -> String {
        format!("{} {}", self.number(minor), self.symbol)
    }

    /// [`Token::amount`] without the symbol.
    pub fn number(&self, minor: &str) -> String {
        let Ok(value) = minor.parse::<u128>() else { return minor.to_owned() };
        let scale = 10u128.pow(self.decimals);
        let (whole, fraction) = (value / scale, value % scale);
        let whole = thousands(whole);
        if fraction == 0 {
            return whole;
        }
        let fraction = format!("{fraction:0width$}", width = self.decimals as usize);
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }

    /// Tokens as a float, for chart heights only (never for sums).
    pub fn approximate(&self, minor: &str) -> f64 {
        minor.parse::<f64>().unwrap_or(0.0) / 10f64.powi(self.decimals as i32)
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u128) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A count, with separators.
pub fn count(value: u64) -> String {
    thousands(value as u128)
}

/// A fraction as a percentage with one decimal: `0.1234` is `12.3%`.
pub fn percent(fraction: f64) -> String {
    if !fraction.is_finite() {
        return "–".to_owned();
    }
    format!("{:.1}%", fraction * 100.0)
}

/// Which way a figure moved against the window before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Flat,
    /// Nothing before to compare with.
    New,
}

impl Direction {
    pub fn class(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Flat => "flat",
            Direction::New => "new",
        }
    }
}

/// The change from `previous` to `current` ([`analytics::Change`]: the one
/// growth definition), as text (`+12.5%`, `−3.0%`, `new`, `×12`) and its
/// direction.
pub fn change(current: f64, previous: f64) -> (String, Direction) {
    let change = analytics::Change::of(current, previous);
    let direction = match (change, change.rising()) {
        (analytics::Change::New, _) => Direction::New,
        (_, Some(true)) => Direction::Up,
        (_, Some(false)) => Direction::Down,
        (_, None) => Direction::Flat,
    };
    (change.to_string(), direction)
}

/// [`change`] as a table cell's content: the text, coloured by direction,
/// with what it compares in its title.
pub fn change_cell(current: f64, previous: f64) -> maud::Markup {
    let (text, direction) = change(current, previous);
    maud::html! {
        span class=(format!("change {}", direction.class())) title=(format!("{} against {} in the window before", thousands_f(current), thousands_f(previous))) { (text) }
    }
}

fn thousands_f(value: f64) -> String {
    if value.fract() == 0.0 && value >= 0.0 { thousands(value as u128) } else { format!("{value:.1}") }
}

/// Milliseconds, with precision where it matters.
pub fn milliseconds(ms: f64) -> String {
    if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.0} ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_decimals_of_the_token() {
        let opg = Token { symbol: "OPG".into(), decimals: 9 };
        assert_eq!(opg.amount("2110900000"), "2.1109 OPG");
        assert_eq!(opg.amount("0"), "0 OPG");
        assert_eq!(opg.amount("1"), "0.000000001 OPG");
        assert_eq!(opg.amount("1234567000000000"), "1,234,567 OPG");
        // Past what f64 holds exactly, still exact.
        assert_eq!(opg.number("9223372036854775807"), "9,223,372,036.854775807");
        assert_eq!(opg.amount("n/a"), "n/a OPG");
        let whole = Token { symbol: "T".into(), decimals: 0 };
        assert_eq!(whole.amount("1500"), "1,500 T");
    }

    #[test]
    fn counts_and_changes_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(change(150.0, 100.0), ("+50.0%".to_owned(), Direction::Up));
        assert_eq!(change(50.0, 100.0), ("−50.0%".to_owned(), Direction::Down));
        assert_eq!(change(5.0, 0.0), ("new".to_owned(), Direction::New));
        assert_eq!(change(4546.0, 1.0), ("×4,546".to_owned(), Direction::Up));
        assert_eq!(change(0.0, 0.0).1, Direction::Flat);
        assert_eq!(milliseconds(1.234), "1.23 ms");
        assert_eq!(milliseconds(123.4), "123 ms");
    }
}
