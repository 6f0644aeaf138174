//! Messages whose JSON form is not an object of their fields.

use base64::Engine as _;
use serde_json::Value;

use super::wire::{Reader, WireType};
use super::{ProtoError, malformed};

const META: &str = "apimachinery.pkg.apis.meta.v1";

/// The JSON form of a special message: `None` when `name` is an ordinary message, and
/// `Some(Value::Null)` when the value is the type's zero, which Go leaves out of JSON.
pub(super) fn decode(name: &str, bytes: &[u8]) -> Result<Option<Value>, ProtoError> {
    let value = match name.strip_prefix(META).and_then(|n| n.strip_prefix('.')) {
        Some("Time") => time(bytes, false)?,
        Some("MicroTime") => time(bytes, true)?,
        Some("Duration") => duration(bytes)?,
        Some("FieldsV1") => embedded_json(bytes)?,
        _ => match name {
            "apimachinery.pkg.api.resource.Quantity" => quantity(bytes)?,
            "apimachinery.pkg.util.intstr.IntOrString" => int_or_string(bytes)?,
            "apimachinery.pkg.runtime.RawExtension" => embedded_json(bytes)?,
            n if n.starts_with("apiextensions_apiserver.") && n.ends_with(".Json") => embedded_json(bytes)?,
            _ => return Ok(None),
        },
    };
    Ok(Some(value))
}

/// Varint fields by tag, for the small fixed-layout specials.
fn varints(bytes: &[u8]) -> Result<[u64; 3], ProtoError> {
    let mut values = [0u64; 3];
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.key()? {
        match (tag, wire) {
            (1..=3, WireType::Varint) => values[tag as usize - 1] = reader.varint()?,
            _ => reader.skip(wire)?,
        }
    }
    Ok(values)
}

/// The bytes of field `wanted` (a string or bytes field).
fn bytes_field(bytes: &[u8], wanted: u32) -> Result<Option<&[u8]>, ProtoError> {
    let mut found = None;
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.key()? {
        if tag == wanted && wire == WireType::Len {
            found = Some(reader.len_delimited()?);
        } else {
            reader.skip(wire)?;
        }
    }
    Ok(found)
}

/// `Time` {seconds = 1, nanos = 2} as RFC 3339 (seconds precision), `MicroTime` with
/// microseconds; the zero time is left out, as Go's `omitempty` does.
#[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)] // two's complement varints
fn time(bytes: &[u8], micro: bool) -> Result<Value, ProtoError> {
    let [seconds, nanos, _] = varints(bytes)?;
    let (seconds, nanos) = (seconds as i64, nanos as i32);
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let at = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 })
        .map_err(|e| malformed(format!("time out of range: {e}")))?;
    let text = if micro { format!("{at:.6}") } else { format!("{at:.0}") };
    Ok(Value::String(text))
}

/// `Duration` {duration = 1, nanoseconds} in Go's `time.Duration` spelling (`1h2m3.5s`).
#[allow(clippy::cast_possible_wrap)] // two's complement varint
fn duration(bytes: &[u8]) -> Result<Value, ProtoError> {
    let nanos = varints(bytes)?[0] as i64;
    Ok(Value::String(go_duration(nanos)))
}

fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (value, unit) = if n < 1_000 {
            (n.to_string(), "ns")
        } else if n < 1_000_000 {
            (fraction(n, 1_000), "µs")
        } else {
            (fraction(n, 1_000_000), "ms")
        };
        return format!("{sign}{value}{unit}");
    }
    let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = fraction(rest, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `n / unit` with its fractional digits, trailing zeros trimmed.
fn fraction(n: u64, unit: u64) -> String {
    let (whole, rest) = (n / unit, n % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `Quantity` {string = 1} as its string.
fn quantity(bytes: &[u8]) -> Result<Value, ProtoError> {
    let text = bytes_field(bytes, 1)?.unwrap_or_default();
    let text = std::str::from_utf8(text).map_err(|_| malformed("a quantity is not UTF-8"))?;
    Ok(if text.is_empty() { Value::Null } else { Value::String(text.to_string()) })
}

/// `IntOrString` {type = 1 (0 int, 1 string), intVal = 2, strVal = 3} as a number or a string.
/// The zero (int 0) is left out: for Go's value fields it means "not set", and defaulting
/// (a Service's `targetPort`) fills it in.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // two's complement varints
fn int_or_string(bytes: &[u8]) -> Result<Value, ProtoError> {
    let [kind, int_val, _] = varints(bytes)?;
    if kind == 1 {
        let text = bytes_field(bytes, 3)?.unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| malformed("an IntOrString is not UTF-8"))?;
        return Ok(Value::String(text.to_string()));
    }
    let int_val = int_val as i32;
    Ok(if int_val == 0 { Value::Null } else { Value::from(int_val) })
}

/// `RawExtension`, `FieldsV1`, `JSON` {raw = 1}: bytes holding JSON, or a nested protobuf object.
fn embedded_json(bytes: &[u8]) -> Result<Value, ProtoError> {
    let Some(raw) = bytes_field(bytes, 1)? else { return Ok(Value::Null) };
    if raw.starts_with(super::MAGIC) {
        return super::decode(raw);
    }
    serde_json::from_slice(raw).map_err(|e| malformed(format!("embedded raw bytes are not JSON: {e}")))
}

/// Bytes fields travel in JSON as standard base64.
pub(super) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_are_spelled_like_go() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500, "1.5µs"),
            (2_000_000, "2ms"),
            (1_000_000_000, "1s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-5_000_000_000, "-5s"),
        ] {
            assert_eq!(go_duration(nanos), text);
        }
    }
}
