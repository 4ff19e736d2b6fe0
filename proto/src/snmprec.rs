//! The snmpsim `.snmprec` text format: one `OID|type|value` per line.
//!
//! Types (ASN.1 tag numbers): 2 INTEGER, 4 OCTET STRING, 5 NULL,
//! 6 OBJECT IDENTIFIER, 64 IpAddress, 65 Counter32, 66 Gauge32,
//! 67 TimeTicks, 70 Counter64. A trailing `x` on the type (`4x`, `64x`)
//! means the value is hex. Blank lines and lines starting with `#` are
//! skipped. A repeated OID keeps the last value (real walks contain exact
//! duplicates). Used by the collector's tests and by the fleet simulator.

use std::collections::BTreeMap;
use std::fmt;

/// A numeric OID; ordered like SNMP orders them (component by component).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// Parse dotted decimal (a leading dot is accepted).
    pub fn parse(s: &str) -> Result<Oid, String> {
        let s = s.trim().strip_prefix('.').unwrap_or(s.trim());
        if s.is_empty() {
            return Err("empty OID".into());
        }
        s.split('.')
            .map(|c| {
                c.parse::<u32>()
                    .map_err(|_| format!("bad OID component {c:?} in {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Oid)
    }

    pub fn starts_with(&self, prefix: &[u32]) -> bool {
        self.0.starts_with(prefix)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A typed SNMP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(i64),
    OctetString(Vec<u8>),
    Null,
    ObjectId(Oid),
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Counter64(u64),
}

impl Value {
    /// SMI type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Integer(_) => "INTEGER",
            Value::OctetString(_) => "OCTET STRING",
            Value::Null => "NULL",
            Value::ObjectId(_) => "OBJECT IDENTIFIER",
            Value::IpAddress(_) => "IpAddress",
            Value::Counter32(_) => "Counter32",
            Value::Gauge32(_) => "Gauge32",
            Value::TimeTicks(_) => "TimeTicks",
            Value::Counter64(_) => "Counter64",
        }
    }
}

/// One bad line of a `.snmprec` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snmprec line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// An SNMP walk: OID → value, in OID order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    map: BTreeMap<Oid, Value>,
}

impl Walk {
    pub fn new() -> Walk {
        Walk::default()
    }

    pub fn insert(&mut self, oid: Oid, value: Value) {
        self.map.insert(oid, value);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Value at an exact OID given as components.
    pub fn get(&self, oid: &[u32]) -> Option<&Value> {
        self.map.get(&Oid(oid.to_vec()))
    }

    /// Value at an exact dotted OID (`None` too when the text is no OID).
    pub fn get_str(&self, oid: &str) -> Option<&Value> {
        Oid::parse(oid).ok().and_then(|o| self.map.get(&o))
    }

    /// Every entry under `prefix` (excluding `prefix` itself), in OID order,
    /// as (suffix after the prefix, value).
    pub fn subtree<'a>(
        &'a self,
        prefix: &'a [u32],
    ) -> impl Iterator<Item = (&'a [u32], &'a Value)> + 'a {
        self.map
            .range(Oid(prefix.to_vec())..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(move |(k, _)| k.0.len() > prefix.len())
            .map(move |(k, v)| (&k.0[prefix.len()..], v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Oid, &Value)> {
        self.map.iter()
    }
}

/// Parse a whole file; the first bad line fails it.
pub fn parse(text: &str) -> Result<Walk, ParseError> {
    let mut walk = Walk::new();
    for (n, line) in text.lines().enumerate() {
        if let Some((oid, value)) = parse_line(line).map_err(|message| ParseError {
            line: n + 1,
            message,
        })? {
            walk.insert(oid, value);
        }
    }
    Ok(walk)
}

/// Parse what can be parsed; bad lines are returned next to the walk.
pub fn parse_lenient(text: &str) -> (Walk, Vec<ParseError>) {
    let mut walk = Walk::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some((oid, value))) => walk.insert(oid, value),
            Ok(None) => {}
            Err(message) => errors.push(ParseError {
                line: n + 1,
                message,
            }),
        }
    }
    (walk, errors)
}

/// One line: `Ok(None)` for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<(Oid, Value)>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let mut parts = line.splitn(3, '|');
    let (Some(oid), Some(tag), Some(raw)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected OID|type|value, got {:?}", clip(line)));
    };
    let oid = Oid::parse(oid)?;
    let (tag, hex) = match tag.strip_suffix('x') {
        Some(t) => (t, true),
        None => (tag, false),
    };
    let bytes = || -> Result<Vec<u8>, String> {
        if hex {
            decode_hex(raw)
        } else {
            Ok(raw.as_bytes().to_vec())
        }
    };
    let text = || -> Result<String, String> {
        String::from_utf8(bytes()?).map_err(|_| "value is not text".to_string())
    };
    let num = |what: &str| -> Result<String, String> {
        let t = text()?;
        if t.trim().is_empty() {
            Err(format!("empty {what}"))
        } else {
            Ok(t.trim().to_string())
        }
    };
    let value = match tag {
        "2" => {
            let t = num("INTEGER")?;
            let v: i64 = t
                .parse()
                .map_err(|_| format!("bad INTEGER {:?}", clip(&t)))?;
            if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) {
                return Err(format!("INTEGER {v} out of 32-bit range"));
            }
            Value::Integer(v)
        }
        "4" => Value::OctetString(bytes()?),
        "5" => Value::Null,
        "6" => Value::ObjectId(Oid::parse(&text()?)?),
        "64" => {
            let b = bytes()?;
            if hex {
                let a: [u8; 4] = b
                    .try_into()
                    .map_err(|_| "IpAddress must be 4 bytes".to_string())?;
                Value::IpAddress(a)
            } else {
                let t = num("IpAddress")?;
                let ip: std::net::Ipv4Addr = t
                    .parse()
                    .map_err(|_| format!("bad IpAddress {:?}", clip(&t)))?;
                Value::IpAddress(ip.octets())
            }
        }
        "65" | "66" | "67" => {
            let t = num("unsigned value")?;
            let v: u32 = t
                .parse()
                .map_err(|_| format!("bad 32-bit unsigned value {:?}", clip(&t)))?;
            match tag {
                "65" => Value::Counter32(v),
                "66" => Value::Gauge32(v),
                _ => Value::TimeTicks(v),
            }
        }
        "70" => {
            let t = num("Counter64")?;
            Value::Counter64(
                t.parse()
                    .map_err(|_| format!("bad Counter64 {:?}", clip(&t)))?,
            )
        }
        other => return Err(format!("unknown type tag {other:?}")),
    };
    Ok(Some((oid, value)))
}

/// Hex digits to bytes (whitespace ignored; an odd count is an error).
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            b'A'..=b'F' => Ok(b - b'A' + 10),
            _ => Err(format!("bad hex digit {:?}", b as char)),
        })
        .collect::<Result<_, _>>()?;
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    Ok(digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type() {
        let w = parse(
            "1.3.6.1.2.1.1.1.0|4|Printer X\n\
             1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.11.2.3.9.1\n\
             1.3.6.1.2.1.1.3.0|67|123\n\
             # comment\n\
             \n\
             1.3.6.1.2.1.2.2.1.6.2|4x|001BA90BA752\n\
             1.3.6.1.2.1.4.20.1.1.10.0.0.1|64|10.0.0.1\n\
             1.3.6.1.2.1.4.20.1.1.10.0.0.2|64x|0a000002\n\
             1.3.6.1.2.1.43.10.2.1.4.1.1|65|7792\n\
             1.3.6.1.2.1.2.2.1.5.1|66|100\n\
             1.3.6.1.2.1.31.1.1.1.6.1|70|18446744073709551615\n\
             1.3.6.1.2.1.4.34|5|\n\
             1.3.6.1.2.1.43.11.1.1.9.1.1|2|-3\n",
        )
        .unwrap();
        assert_eq!(w.len(), 11);
        assert_eq!(
            w.get_str("1.3.6.1.2.1.2.2.1.6.2"),
            Some(&Value::OctetString(vec![
                0x00, 0x1b, 0xa9, 0x0b, 0xa7, 0x52
            ]))
        );
        assert_eq!(
            w.get_str("1.3.6.1.2.1.4.20.1.1.10.0.0.2"),
            Some(&Value::IpAddress([10, 0, 0, 2]))
        );
        assert_eq!(
            w.get_str("1.3.6.1.2.1.31.1.1.1.6.1"),
            Some(&Value::Counter64(u64::MAX))
        );
        assert_eq!(w.get_str("1.3.6.1.2.1.4.34"), Some(&Value::Null));
        assert_eq!(
            w.get_str("1.3.6.1.2.1.43.11.1.1.9.1.1"),
            Some(&Value::Integer(-3))
        );
    }

    #[test]
    fn orders_numerically_and_subtree_excludes_siblings() {
        let w = parse("1.3.6.10|2|3\n1.3.6.9|2|2\n1.3.6.1.5|2|1\n1.3.61|2|9\n").unwrap();
        let keys: Vec<String> = w.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["1.3.6.1.5", "1.3.6.9", "1.3.6.10", "1.3.61"]);
        let sub: Vec<_> = w.subtree(&[1, 3, 6]).map(|(s, _)| s.to_vec()).collect();
        assert_eq!(sub, vec![vec![1, 5], vec![9], vec![10]]);
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, needle) in [
            ("1.3.6|2|1\nnot a line\n", "expected OID|type|value"),
            ("1.3.6|2|1\n1.3.x|2|1\n", "bad OID component"),
            ("1.3.6|2|1\n1.3.7|2|abc\n", "bad INTEGER"),
            ("1.3.6|2|1\n1.3.7|2|99999999999\n", "out of 32-bit range"),
            ("1.3.6|2|1\n1.3.7|65|-1\n", "bad 32-bit unsigned"),
            ("1.3.6|2|1\n1.3.7|4x|ABC\n", "odd number of hex digits"),
            ("1.3.6|2|1\n1.3.7|4x|zz\n", "bad hex digit"),
            ("1.3.6|2|1\n1.3.7|99|1\n", "unknown type tag"),
            ("1.3.6|2|1\n1.3.7|64|1.2.3\n", "bad IpAddress"),
            ("1.3.6|2|1\n1.3.7|2|\n", "empty INTEGER"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, 2, "{text:?}");
            assert!(
                err.message.contains(needle),
                "{err} should contain {needle}"
            );
            assert!(err.to_string().starts_with("snmprec line 2: "));
        }
    }

    #[test]
    fn lenient_keeps_good_lines() {
        let (w, errs) = parse_lenient("1.3.6|2|1\n|||\n1.3.7|4|a|b\n1.3.8|67\n");
        assert_eq!(w.len(), 2);
        assert_eq!(
            w.get_str("1.3.7"),
            Some(&Value::OctetString(b"a|b".to_vec()))
        );
        assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 4]);
    }
}
