//! Byte sizes as hub.yaml writes them (`24GiB`, `512MiB`, `8GB`) and as hub prints them
//! (`7.5 GiB`).

/// The units hub.yaml accepts, binary and decimal, with their sizes.
const UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// The JSON Schema pattern of a size: a number (a decimal fraction allowed) and a unit.
pub const PATTERN: &str = r"^[0-9]+(\.[0-9]{1,9})? ?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)$";

/// Parses `24GiB`, `7.5 GiB`, `512MiB`, `8GB`, `100B` into bytes (a fraction rounds down to a
/// whole byte). `None` for anything else, a size past `u64`, or zero.
pub fn parse(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') {
        return None;
    }
    let mut bytes = whole.parse::<u64>().ok()?.checked_mul(*scale)?;
    // The fraction in exact integer arithmetic: `7.5GiB` is exactly 7.5 GiB. Nine digits at
    // most, so its numerator fits.
    if !fraction.is_empty() {
        if fraction.len() > 9 {
            return None;
        }
        let numerator: u128 = fraction.parse().ok()?;
        let denominator = 10u128.pow(fraction.len() as u32);
        let extra = numerator * u128::from(*scale) / denominator;
        bytes = bytes.checked_add(u64::try_from(extra).ok()?)?;
    }
    (bytes > 0).then_some(bytes)
}

/// A size for people: `512 B`, `1.5 KiB`, `7.5 GiB`, with one decimal past 10 of a unit and two
/// below, trailing zeros dropped.
pub fn format(bytes: u64) -> String {
    const BINARY: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < BINARY.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let digits = if value >= 10.0 { 1 } else { 2 };
    let text = format!("{value:.digits$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", BINARY[unit])
}

/// `+7.5 GiB, evicts small`: what a load takes and whom it pushes out of its group, as `hub diff`
/// and `hub apply` word it. `None` when neither is known.
pub fn load_note<'a>(
    bytes: Option<u64>,
    evicts: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let names: Vec<&str> = evicts.into_iter().collect();
    let parts: Vec<String> = [
        bytes.map(|b| format!("+{}", format(b))),
        (!names.is_empty()).then(|| format!("evicts {}", names.join(", "))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse("24GiB"), Some(24 << 30));
        assert_eq!(parse("512MiB"), Some(512 << 20));
        assert_eq!(parse("8GB"), Some(8_000_000_000));
        assert_eq!(parse("7.5GiB"), Some(15 << 29));
        assert_eq!(parse("7.5 GiB"), Some(15 << 29));
        assert_eq!(parse("100B"), Some(100));
        assert_eq!(parse("1.5KB"), Some(1_500));
        assert_eq!(parse("0.1B"), None, "rounds to zero");
        for bad in [
            "",
            "GiB",
            "24",
            "24gib",
            "24 GiB ",
            "-1GiB",
            "1..5GiB",
            ".5GiB",
            "5.GiB",
            "24XB",
            "0GiB",
            "99999999999TiB",
            "1e3MB",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_parser() {
        let schema = serde_json::json!({"type": "string", "pattern": PATTERN});
        let validator = jsonschema::validator_for(&schema).expect("a valid pattern");
        for text in [
            "24GiB", "7.5 GiB", "8GB", "100B", "24", "24 gib", "1.GiB", ".5GiB", "1e3MB", "24  GiB",
        ] {
            let parses = parse(text).is_some();
            assert_eq!(
                validator.is_valid(&serde_json::json!(text)),
                parses,
                "{text:?}"
            );
        }
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(format(512), "512 B");
        assert_eq!(format(1536), "1.5 KiB");
        assert_eq!(format(15 << 29), "7.5 GiB");
        assert_eq!(format(24 << 30), "24 GiB");
        assert_eq!(format(100 << 20), "100 MiB");
        assert_eq!(format(1 << 40), "1 TiB");
    }
}
