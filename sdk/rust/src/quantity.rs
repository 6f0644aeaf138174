//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2`) as exact thousandths, for policies that
//! compare and add requests and limits (`LimitRanger`, `ResourceQuota`).

/// A quantity in thousandths of its unit (`1` CPU = 1000, `1Ki` = 1 024 000).
pub type Milli = i128;

/// Parses a quantity into thousandths; `None` when it is not a quantity.
#[must_use]
pub fn parse(text: &str) -> Option<Milli> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (multiplier, divisor): (i128, i128) = match suffix {
        "" => (1000, 1),
        "n" => (1, 1_000_000),
        "u" => (1, 1000),
        "m" => (1, 1),
        "k" => (1000 * 1000, 1),
        "M" => (1000 * 1_000_000, 1),
        "G" => (1000 * 1_000_000_000, 1),
        "T" => (1000 * 1_000_000_000_000, 1),
        "P" => (1000 * 1_000_000_000_000_000, 1),
        "E" => (1000 * 1_000_000_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000 << 40, 1),
        "Pi" => (1000 << 50, 1),
        "Ei" => (1000 << 60, 1),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: u32 = exponent[1..].parse().ok()?;
            (1000 * 10_i128.checked_pow(power)?, 1)
        }
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let negative = whole.starts_with('-');
    let whole: i128 =
        whole.trim_start_matches(['+', '-']).parse().ok().or(if whole.len() <= 1 { Some(0) } else { None })?;
    let mut value = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits: i128 = fraction.parse().ok()?;
        let scale = 10_i128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        value = value.checked_add(digits.checked_mul(multiplier)? / scale)?;
    }
    // Sub-milli quantities round up, as Kubernetes does for CPU.
    let value = (value + divisor - 1) / divisor;
    Some(if negative { -value } else { value })
}

/// Formats thousandths back into a quantity: whole units when exact, milli-units otherwise.
#[must_use]
pub fn format(milli: Milli) -> String {
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

/// Formats a quantity of `resource` as Kubernetes prints it: amounts of bytes (memory, storage,
/// hugepages) that are whole multiples of 1024 with the largest binary suffix that divides them
/// (`384Mi`, `1Gi`), everything else as [`format`] does (`500m`, `2`).
#[must_use]
pub fn format_for(resource: &str, milli: Milli) -> String {
    let bytes = resource.contains("memory") || resource.contains("storage") || resource.contains("hugepages-");
    if !bytes || milli % 1000 != 0 || milli == 0 {
        return format(milli);
    }
    let mut amount = milli / 1000;
    let mut suffixes = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter();
    let mut suffix = "";
    while amount % 1024 == 0 {
        let Some(next) = suffixes.next() else { break };
        amount /= 1024;
        suffix = next;
    }
    format!("{amount}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::{format, format_for, parse};

    #[test]
    fn quantities_parse_to_thousandths() {
        let cases = [
            ("1", Some(1000)),
            ("100m", Some(100)),
            ("0.5", Some(500)),
            ("1.5Gi", Some(1000 * 3 * (1 << 29))),
            ("128Mi", Some(1000 * 128 * (1 << 20))),
            ("1k", Some(1_000_000)),
            ("1e3", Some(1_000_000)),
            ("250u", Some(1)),
            ("x", None),
            ("1Zi", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), expected, "{text}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(format(2000), "2");
        assert_eq!(format(250), "250m");
        let cases = [
            ("requests.memory", 384 << 20, "384Mi"),
            ("memory", 1 << 30, "1Gi"),
            ("requests.storage", 1536, "1536"),
            ("limits.memory", 1_000_000_000, "1000000000"),
            ("requests.cpu", 2048, "2048"),
            ("hugepages-2Mi", 2 << 20, "2Mi"),
            ("memory", 0, "0"),
        ];
        for (resource, bytes, text) in cases {
            assert_eq!(format_for(resource, bytes * 1000), text, "{resource}");
            assert_eq!(parse(text), Some(bytes * 1000), "{text}");
        }
    }
}
