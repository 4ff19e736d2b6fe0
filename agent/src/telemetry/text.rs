//! Turning printer OCTET STRINGs into text.

/// prtLocalizationCharacterSet values (IANA MIBenum) that we decode.
pub const CHARSET_UTF8: i64 = 106;

/// Decode a display string: trailing NULs and whitespace dropped, HP's
/// "head\n" + hex dump form expanded, UTF-8 when valid (or when the device
/// declares UTF-8, lossily), Latin-1 otherwise. UTF-16 and Shift_JIS are not
/// decoded (lossy UTF-8 instead).
pub fn display_string(bytes: &[u8], charset: Option<i64>) -> String {
    let bytes = expand_hp_hex_tail(bytes);
    let cut = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..cut];
    let s = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) if charset == Some(CHARSET_UTF8) => String::from_utf8_lossy(bytes).into_owned(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    };
    s.trim().to_string()
}

/// HP firmware sends long descriptions as the first 16 bytes, a `\n`, then
/// the remaining bytes as space separated hex pairs ("38 32 37 41 00 ").
/// Returns the joined bytes; input without that shape is returned as is.
fn expand_hp_hex_tail(bytes: &[u8]) -> Vec<u8> {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return bytes.to_vec();
    };
    let tail = &bytes[nl + 1..];
    let Ok(tail) = std::str::from_utf8(tail) else {
        return bytes.to_vec();
    };
    let pairs: Vec<&str> = tail.split_ascii_whitespace().collect();
    if pairs.is_empty()
        || !pairs
            .iter()
            .all(|p| p.len() <= 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return bytes.to_vec();
    }
    let mut out = bytes[..nl].to_vec();
    // A walk truncated mid-pair leaves a lone digit at the end: dropped.
    for p in pairs.iter().filter(|p| p.len() == 2) {
        if let Ok(b) = u8::from_str_radix(p, 16) {
            out.push(b);
        }
    }
    out
}

/// Drop leading control bytes (HP's PML strings start with 0x01 0x15).
pub fn strip_leading_controls(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b >= 0x20).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hp_hex_tail() {
        let raw = b"Black Cartridge \n38 32 37 41 20 48 50 00 ";
        assert_eq!(display_string(raw, None), "Black Cartridge 827A HP");
        // Truncated mid pair.
        let raw = b"Magenta Cartridg\n65 20 38 3";
        assert_eq!(display_string(raw, None), "Magenta Cartridge 8");
        // A newline followed by normal text is left alone.
        assert_eq!(
            display_string(b"Line one\nline two", None),
            "Line one\nline two"
        );
    }

    #[test]
    fn nul_and_latin1() {
        assert_eq!(display_string(b"Toner\0\0\0", None), "Toner");
        assert_eq!(display_string(b"Tambour \xe9", Some(4)), "Tambour é");
        assert_eq!(display_string(b"Tambour \xc3\xa9", Some(106)), "Tambour é");
        assert_eq!(display_string(b"x\xff", Some(106)), "x\u{fffd}");
    }
}
