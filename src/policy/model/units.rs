//! Sizes, durations and CPU counts as policies write them (`512M`, `30s`,
//! `1.5`), with their JSON schema.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes; written as an integer or with a binary suffix
/// (K, M, G, T; "KiB" style and a trailing "B" are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const SIZE_EXPECTED: &str = "a size like \"512M\", \"2G\" or a positive number of bytes";

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected {SIZE_EXPECTED}, got {s:?}"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let mult: u64 = match unit.as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(format!("expected {SIZE_EXPECTED}, got {s:?}")),
        };
        let v = n
            .checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} is too large"))?;
        if v == 0 {
            return Err(format!("expected {SIZE_EXPECTED}, got {s:?}"));
        }
        Ok(ByteSize(v))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, shift) in [("T", 40u32), ("G", 30), ("M", 20), ("K", 10)] {
            let unit = 1u64 << shift;
            if self.0 >= unit && self.0 % unit == 0 {
                return write!(f, "{}{}", self.0 / unit, suffix);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1024 == 0 {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                if v == 0 {
                    return Err(E::invalid_value(Unexpected::Unsigned(v), &self));
                }
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a positive number of bytes, or a number with a binary suffix K, M, G or T (e.g. \"512M\").",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+ *([KkMmGgTt]([iI]?[bB])?|[bB])?$" }
            ]
        })
    }
}

/// A core-dump size limit: like [`ByteSize`], but `0` (no core dumps) is
/// the usual value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoreSize(pub u64);

impl CoreSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CoreSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("0")
        } else {
            ByteSize(self.0).fmt(f)
        }
    }
}

impl Serialize for CoreSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 {
            s.serialize_u64(0)
        } else {
            ByteSize(self.0).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for CoreSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a size like \"0\", \"512M\" or a number of bytes";
        impl Visitor<'_> for V {
            type Value = CoreSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CoreSize, E> {
                Ok(CoreSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CoreSize, E> {
                u64::try_from(v)
                    .map(CoreSize)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CoreSize, E> {
                if v.trim().trim_start_matches('0').is_empty() && !v.trim().is_empty() {
                    return Ok(CoreSize(0));
                }
                ByteSize::parse(v)
                    .map(|b| CoreSize(b.bytes()))
                    .map_err(|_| E::custom(format!("expected {EXPECTED}, got {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for CoreSize {
    fn schema_name() -> Cow<'static, str> {
        "CoreSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes (0: none), or a number with a binary suffix K, M, G or T (e.g. \"512M\").",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+ *([KkMmGgTt]([iI]?[bB])?|[bB])?$" }
            ]
        })
    }
}

/// A duration in milliseconds; written as a number of seconds or with a
/// unit: "500ms", "30s", "5m", "2h".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeSpan(pub u64);

const DURATION_EXPECTED: &str =
    "a duration like \"30s\", \"5m\", \"1h\", \"500ms\" or a positive number of seconds";

impl TimeSpan {
    pub fn millis(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected {DURATION_EXPECTED}, got {s:?}"))?;
        let mult: u64 = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("expected {DURATION_EXPECTED}, got {s:?}")),
        };
        match n.checked_mul(mult) {
            Some(0) => Err(format!("expected {DURATION_EXPECTED}, got {s:?}")),
            Some(v) => Ok(TimeSpan(v)),
            None => Err(format!("duration {s:?} is too large")),
        }
    }
}

impl fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms % 3_600_000 == 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for TimeSpan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeSpan;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeSpan, E> {
                match v.checked_mul(1000) {
                    Some(ms) if ms > 0 => Ok(TimeSpan(ms)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeSpan, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeSpan, E> {
                TimeSpan::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for TimeSpan {
    fn schema_name() -> Cow<'static, str> {
        "TimeSpan".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: a positive number of seconds, or a number with a unit ms, s, m or h (e.g. \"30s\").",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+ *(ms|s|m|min|h)?$" }
            ]
        })
    }
}

/// CPU cores, fractional allowed; must be > 0 and at most 1024.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Cpus(f64);

impl Cpus {
    pub fn new(v: f64) -> Result<Self, String> {
        Self::try_from(v)
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Cpus {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v > 0.0 && v <= 1024.0 {
            Ok(Cpus(v))
        } else {
            Err(format!(
                "expected a number of CPU cores greater than 0 (e.g. 0.5 or 2), got {v}"
            ))
        }
    }
}

impl From<Cpus> for f64 {
    fn from(c: Cpus) -> f64 {
        c.0
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> Cow<'static, str> {
        "Cpus".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "CPU cores, fractional allowed (e.g. 0.5).",
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1024
        })
    }
}
