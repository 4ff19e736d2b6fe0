//! CSV for every export — the device report, the audit log, `dwa-agent
//! scan --format csv` — with one writer and one rule against spreadsheet
//! formulas.
//!
//! Text that came from anywhere else (SNMP strings, names, audit details,
//! column names built from supply labels) is a [`Cell::text`]: when it
//! starts with `=`, `+`, `-`, `@`, a tab or a carriage return, it gets a
//! leading `'`, so a spreadsheet shows it instead of evaluating it (the
//! OWASP rule for CSV injection). Numbers are [`Cell::number`], built only
//! from numeric types, and are written as they are: a negative value stays
//! a number. Quoting is the `csv` crate's (RFC 4180: quotes where needed,
//! inner quotes doubled). Pure: it writes into memory.

use std::borrow::Cow;
use std::fmt::Display;

/// A CSV export could not be written (the `csv` crate's error, as text).
#[derive(Debug, thiserror::Error)]
#[error("CSV: {0}")]
pub struct CsvError(String);

impl From<::csv::Error> for CsvError {
    fn from(e: ::csv::Error) -> Self {
        CsvError(e.to_string())
    }
}

/// The one formula rule: text that a spreadsheet would evaluate gets a
/// leading `'`.
pub fn defuse(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Numeric types a [`Cell::number`] may be built from (never text).
pub trait Numeric: Display + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numeric {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Numeric for $t {}
    )*};
}
numeric!(u8, u16, u32, u64, usize, i8, i16, i32, i64, f32, f64);

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell(String);

impl Cell {
    /// Text from anywhere: defused (see [`defuse`]).
    pub fn text(s: &str) -> Cell {
        Cell(defuse(s).into_owned())
    }

    /// Text that may be absent (an empty cell then).
    pub fn opt_text(s: Option<&str>) -> Cell {
        Cell::text(s.unwrap_or(""))
    }

    /// A number, as `Display` writes it.
    pub fn number(n: impl Numeric) -> Cell {
        Cell(n.to_string())
    }

    /// A number that may be absent (an empty cell then).
    pub fn opt_number<T: Numeric>(n: Option<T>) -> Cell {
        n.map_or_else(|| Cell(String::new()), Cell::number)
    }

    /// A number with `places` decimals.
    pub fn decimal(n: f64, places: usize) -> Cell {
        Cell(format!("{n:.places$}"))
    }

    /// An empty cell.
    pub fn empty() -> Cell {
        Cell(String::new())
    }
}

/// A CSV document being written: a header, then rows.
pub struct Table {
    w: ::csv::Writer<Vec<u8>>,
}

impl Table {
    /// Starts a document with these column names (defused like text: some
    /// are built from what devices report).
    pub fn new<S: AsRef<str>>(head: impl IntoIterator<Item = S>) -> Result<Table, CsvError> {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        w.write_record(head.into_iter().map(|h| defuse(h.as_ref()).into_owned()))?;
        Ok(Table { w })
    }

    /// Appends one row.
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) -> Result<(), CsvError> {
        self.w.write_record(cells.into_iter().map(|c| c.0))?;
        Ok(())
    }

    /// The document as text.
    pub fn finish(self) -> Result<String, CsvError> {
        let bytes = self
            .w
            .into_inner()
            .map_err(|e| CsvError(e.error().to_string()))?;
        String::from_utf8(bytes).map_err(|e| CsvError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_in_text_are_defused_and_numbers_stay_numbers() {
        let mut t = Table::new(["name", "=head", "count"]).unwrap();
        t.row([
            Cell::text("=HYPERLINK(\"http://x\")"),
            Cell::text("+1"),
            Cell::number(-5i64),
        ])
        .unwrap();
        t.row([
            Cell::text("@sum"),
            Cell::text("\tx"),
            Cell::decimal(12.345, 1),
        ])
        .unwrap();
        t.row([
            Cell::text("-2"),
            Cell::opt_text(None),
            Cell::opt_number::<u64>(None),
        ])
        .unwrap();
        let out = t.finish().unwrap();
        let mut rd = ::csv::Reader::from_reader(out.as_bytes());
        assert_eq!(
            rd.headers().unwrap().iter().collect::<Vec<_>>(),
            ["name", "'=head", "count"]
        );
        let rows: Vec<Vec<String>> = rd
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(rows[0], ["'=HYPERLINK(\"http://x\")", "'+1", "-5"]);
        assert_eq!(rows[1], ["'@sum", "'\tx", "12.3"]);
        assert_eq!(rows[2], ["'-2", "", ""]);
    }

    #[test]
    fn quoting_is_rfc_4180() {
        let mut t = Table::new(["a"]).unwrap();
        t.row([Cell::text("LaserJet, \"M404\"\nline")]).unwrap();
        assert_eq!(t.finish().unwrap(), "a\n\"LaserJet, \"\"M404\"\"\nline\"\n");
    }

    #[test]
    fn harmless_text_is_untouched() {
        assert!(matches!(defuse("HP LaserJet"), Cow::Borrowed(_)));
        assert_eq!(defuse(""), "");
        assert_eq!(defuse(" =x"), " =x");
    }
}
