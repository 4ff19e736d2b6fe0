//! Device profiles: `.snmprec` walks shipped with the simulator
//! (`sim/profiles/`, embedded at build time) and their per-instance
//! templating.
//!
//! A profile's text is snmpsim's `.snmprec` with placeholders, replaced for
//! each simulated device from its address so that every instance is unique
//! and its identity predictable by tests:
//!
//! | placeholder | value |
//! |---|---|
//! | `${IP}` | the device's IPv4 address, dotted (also inside OIDs: IP-MIB rows) |
//! | `${MAC}`, `${MAC2}` | 12 hex digits: the profile's OUI + the address's last 3 bytes (`MAC2` flips a bit: a second interface) |
//! | `${SERIAL}` | the profile's serial prefix + the address's last 3 bytes as 8 decimal digits |
//! | `${SYSNAME}` | the profile's host name prefix + the last 3 bytes in hex |
//! | `${UPTIME}` | sysUpTime, growing in real time |
//! | `${TOTAL}` `${MONO}` `${COLOUR}` `${PRINT}` `${COPY}` | page counters that grow while the simulator runs |
//!
//! The growing values are looked up at answer time (see [`Dynamic`]); the
//! walk keeps the value type the profile line gave (Counter32 or INTEGER).

use std::collections::BTreeMap;
use std::net::IpAddr;

use dwa_proto::snmprec::{self, Oid, Value};

use super::Fault;
use crate::SimError;

/// A device profile shipped with the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// File stem in `sim/profiles/`, e.g. `hp_color_mfp`.
    pub name: &'static str,
    pub text: &'static str,
    /// `None`: no printer (the collector must ignore it).
    pub printer: Option<PrinterMeta>,
    /// First three bytes of every instance's MAC.
    pub oui: [u8; 3],
    pub sys_name_prefix: &'static str,
    pub serial_prefix: &'static str,
}

/// What the collector should decode from a printer profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterMeta {
    /// Manufacturer name as the collector spells it (from the enterprise
    /// number, or from sysDescr for a rebadged device).
    pub vendor: &'static str,
    /// hrDeviceDescr of the printer row, or the vendor MIB's model, or the
    /// head of sysDescr: whichever the profile has.
    pub model: &'static str,
}

/// Every profile, printers first (the default round-robin uses the printers).
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "hp_color_mfp",
        text: include_str!("../../profiles/hp_color_mfp.snmprec"),
        printer: Some(PrinterMeta {
            vendor: "HP",
            model: "HP Color LaserJet MFP M480f",
        }),
        oui: [0x3c, 0x52, 0x82],
        sys_name_prefix: "NPI",
        serial_prefix: "CNBR",
    },
    Profile {
        name: "kyocera_mono",
        text: include_str!("../../profiles/kyocera_mono.snmprec"),
        printer: Some(PrinterMeta {
            vendor: "Kyocera",
            model: "ECOSYS P3145dn",
        }),
        oui: [0x00, 0x17, 0xc8],
        sys_name_prefix: "KM",
        serial_prefix: "VCF",
    },
    Profile {
        name: "ricoh_color_mfp",
        text: include_str!("../../profiles/ricoh_color_mfp.snmprec"),
        printer: Some(PrinterMeta {
            vendor: "Ricoh",
            model: "RICOH IM C3000",
        }),
        oui: [0x00, 0x26, 0x73],
        sys_name_prefix: "RNP",
        serial_prefix: "3101R",
    },
    Profile {
        name: "brother_inkjet",
        text: include_str!("../../profiles/brother_inkjet.snmprec"),
        printer: Some(PrinterMeta {
            vendor: "Brother",
            model: "Brother MFC-J5740DW",
        }),
        oui: [0x30, 0x05, 0x5c],
        sys_name_prefix: "BRN",
        serial_prefix: "E80",
    },
    // Shapes of real walks that lack a table: the collector must still
    // report what the other tables and sysDescr say.
    Profile {
        name: "ricoh_no_hrtype",
        text: include_str!("../../profiles/ricoh_no_hrtype.snmprec"),
        printer: Some(PrinterMeta {
            vendor: "Ricoh",
            model: "MP C2504",
        }),
        oui: [0x58, 0x38, 0x79],
        sys_name_prefix: "RNP",
        serial_prefix: "E216R",
    },
    Profile {
        name: "oem_sysdescr_only",
        text: include_str!("../../profiles/oem_sysdescr_only.snmprec"),
        printer: Some(PrinterMeta {
            vendor: "Toshiba TEC",
            model: "TOSHIBA e-STUDIO409S",
        }),
        oui: [0x00, 0x80, 0x91],
        sys_name_prefix: "TEC",
        serial_prefix: "CNE",
    },
    Profile {
        name: "switch",
        text: include_str!("../../profiles/switch.snmprec"),
        printer: None,
        oui: [0x00, 0x1c, 0x2e],
        sys_name_prefix: "sw-",
        serial_prefix: "SG",
    },
];

/// The profile called `name`.
pub fn by_name(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// The printer profiles, in [`PROFILES`] order.
pub fn printers() -> impl Iterator<Item = &'static Profile> {
    PROFILES.iter().filter(|p| p.printer.is_some())
}

/// Values computed when asked (they grow with time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {
    Uptime,
    Total,
    Mono,
    Colour,
    Print,
    Copy,
}

impl Dynamic {
    const ALL: [(&'static str, Dynamic); 6] = [
        ("${UPTIME}", Dynamic::Uptime),
        ("${TOTAL}", Dynamic::Total),
        ("${MONO}", Dynamic::Mono),
        ("${COLOUR}", Dynamic::Colour),
        ("${PRINT}", Dynamic::Print),
        ("${COPY}", Dynamic::Copy),
    ];

    /// The value for a device whose total page count is `total`.
    pub fn value(self, total: u64, uptime_ticks: u32) -> u64 {
        match self {
            Dynamic::Uptime => u64::from(uptime_ticks),
            Dynamic::Total => total,
            // A third colour, a quarter copies: fixed shares keep the parts
            // adding up to the total at every instant.
            Dynamic::Colour => total / 3,
            Dynamic::Mono => total - total / 3,
            Dynamic::Copy => total / 4,
            Dynamic::Print => total - total / 4,
        }
    }
}

/// Who one simulated device is: what its walk says and tests can expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub profile: &'static str,
    pub serial: String,
    /// Lower-case, colon separated, like the collector prints it.
    pub mac: String,
    pub sys_name: String,
    /// `None` for a non-printer profile.
    pub vendor: Option<&'static str>,
    pub model: Option<&'static str>,
    /// Page count when the simulator started.
    pub base_total: u64,
}

/// One device's walk, ready to answer from.
#[derive(Debug, Clone)]
pub struct Instance {
    pub identity: Identity,
    pub entries: BTreeMap<Vec<u32>, Value>,
    pub dynamic: BTreeMap<Vec<u32>, Dynamic>,
}

/// The 3 low bytes of the address: unique within a /8, which is all the
/// loopback range offers.
fn low24(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a) & 0x00ff_ffff,
        IpAddr::V6(a) => {
            u32::from_be_bytes(a.octets()[12..16].try_into().unwrap_or([0; 4])) & 0x00ff_ffff
        }
    }
}

fn dotted(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        // IP-MIB's ipAdEntTable is IPv4 only: an IPv6 device gets the v4
        // address of its low bytes there (the collector then falls back).
        IpAddr::V6(_) => std::net::Ipv4Addr::from(0x0a00_0000 | low24(ip)).to_string(),
    }
}

impl Profile {
    /// Identity of the instance at `ip`.
    pub fn identity(&self, ip: IpAddr) -> Identity {
        let low = low24(ip);
        let mac = self.mac_bytes(low, false);
        Identity {
            profile: self.name,
            serial: format!("{}{low:08}", self.serial_prefix),
            mac: mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            sys_name: format!("{}{low:06X}", self.sys_name_prefix),
            vendor: self.printer.map(|p| p.vendor),
            model: self.printer.map(|p| p.model),
            // Spread so that counters differ between printers; well within
            // an INTEGER for the profiles that use one.
            base_total: 10_000 + u64::from(low % 50_000) * 7,
        }
    }

    fn mac_bytes(&self, low: u32, second: bool) -> [u8; 6] {
        let [_, a, b, c] = low.to_be_bytes();
        let [o0, o1, o2] = self.oui;
        [o0, o1, o2, a ^ u8::from(second) << 7, b, c]
    }

    /// The walk of the instance at `ip`, with `fault`'s data changes.
    pub fn instantiate(&self, ip: IpAddr, fault: Option<Fault>) -> Result<Instance, SimError> {
        let identity = self.identity(ip);
        let low = low24(ip);
        let hex = |m: [u8; 6]| m.iter().map(|b| format!("{b:02X}")).collect::<String>();
        let statics = [
            ("${IP}", dotted(ip)),
            ("${MAC}", hex(self.mac_bytes(low, false))),
            ("${MAC2}", hex(self.mac_bytes(low, true))),
            ("${SERIAL}", identity.serial.clone()),
            ("${SYSNAME}", identity.sys_name.clone()),
        ];
        let mut entries = BTreeMap::new();
        let mut dynamic = BTreeMap::new();
        for (n, raw) in self.text.lines().enumerate() {
            let mut line = raw.to_string();
            for (k, v) in &statics {
                if line.contains(k) {
                    line = line.replace(k, v);
                }
            }
            let mut dyn_kind = None;
            for (k, d) in Dynamic::ALL {
                if line.contains(k) {
                    line = line.replace(k, "0");
                    dyn_kind = Some(d);
                }
            }
            let parsed = snmprec::parse_line(&line).map_err(|e| SimError::Profile {
                profile: self.name,
                line: n + 1,
                reason: e,
            })?;
            if let Some((oid, value)) = parsed {
                if let Some(d) = dyn_kind {
                    dynamic.insert(oid.0.clone(), d);
                }
                entries.insert(oid.0, value);
            }
        }
        let mut inst = Instance {
            identity,
            entries,
            dynamic,
        };
        if let Some(f) = fault {
            inst.apply(f);
        }
        Ok(inst)
    }
}

const PRT_SUPPLIES: [u32; 10] = [1, 3, 6, 1, 2, 1, 43, 11, 1, 1];

impl Instance {
    /// The printer's hrDeviceIndex as the Printer-MIB tables use it (the
    /// second component after the supplies column), 1 when there is none.
    fn printer_index(&self) -> u32 {
        self.entries
            .keys()
            .find(|k| k.starts_with(&PRT_SUPPLIES) && k.len() > PRT_SUPPLIES.len() + 1)
            .map(|k| k[PRT_SUPPLIES.len() + 1])
            .unwrap_or(1)
    }

    fn set(&mut self, oid: &[u32], v: Value) {
        self.dynamic.remove(oid);
        self.entries.insert(oid.to_vec(), v);
    }

    /// The data faults (the protocol faults act when answering).
    fn apply(&mut self, fault: Fault) {
        let pi = self.printer_index();
        let col = |c: u32, row: u32| {
            let mut o = PRT_SUPPLIES.to_vec();
            o.extend([c, pi, row]);
            o
        };
        match fault {
            Fault::HugeTable => {
                // 2000 extra supply rows with long descriptions: more than
                // the collector's varbind budget, many GETBULK round trips.
                for row in 100..2100 {
                    let text = format!("Spare part {row} {}", "x".repeat(60));
                    self.set(&col(4, row), Value::Integer(3));
                    self.set(&col(5, row), Value::Integer(1));
                    self.set(&col(6, row), Value::OctetString(text.into_bytes()));
                    self.set(&col(7, row), Value::Integer(7));
                    self.set(&col(8, row), Value::Integer(100_000));
                    self.set(&col(9, row), Value::Integer(i64::from(row % 100) * 1000));
                }
            }
            Fault::NonUtf8Strings => {
                // Latin-1 and broken UTF-8 where text is expected, a NUL
                // in the middle, raw 0xff bytes.
                self.set(
                    &[1, 3, 6, 1, 2, 1, 1, 5, 0],
                    Value::OctetString(b"Drucker-B\xfcro\xff\xfe".to_vec()),
                );
                self.set(
                    &col(6, 1),
                    Value::OctetString(b"Toner \xe9\x80\x00junk".to_vec()),
                );
                self.set(
                    &col(6, 2),
                    Value::OctetString(vec![0xc3, 0x28, 0xa0, 0xa1, 0xff]),
                );
            }
            Fault::WrongTypes => {
                // Types a collector must not trust: serial as INTEGER,
                // life count as an OID, a level as a string, the error
                // state as INTEGER, sysObjectID as a string.
                let mut serial = vec![1, 3, 6, 1, 2, 1, 43, 5, 1, 1, 17];
                serial.push(pi);
                self.set(&serial, Value::Integer(12345));
                self.set(
                    &[1, 3, 6, 1, 2, 1, 43, 10, 2, 1, 4, pi, 1],
                    Value::ObjectId(Oid(vec![1, 3, 6, 1])),
                );
                self.set(&col(9, 1), Value::OctetString(b"50%".to_vec()));
                self.set(&col(5, 1), Value::IpAddress([10, 0, 0, 1]));
                self.set(&[1, 3, 6, 1, 2, 1, 25, 3, 5, 1, 2, pi], Value::Integer(4));
                self.set(
                    &[1, 3, 6, 1, 2, 1, 1, 2, 0],
                    Value::OctetString(b"not an oid".to_vec()),
                );
            }
            Fault::TruncatedBer | Fault::WrongRequestId | Fault::CountersBackwards => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn every_profile_parses_and_is_unique_per_address() {
        for p in PROFILES {
            let a = p.instantiate(ip("127.20.0.1"), None).expect(p.name);
            let b = p.instantiate(ip("127.20.0.2"), None).expect(p.name);
            assert!(a.entries.len() > 10, "{}", p.name);
            assert_ne!(a.identity.serial, b.identity.serial);
            assert_ne!(a.identity.mac, b.identity.mac);
            assert_ne!(a.identity.sys_name, b.identity.sys_name);
            // The address's IP-MIB row exists and names an interface whose
            // ifPhysAddress is the identity's MAC.
            let mut key = vec![1, 3, 6, 1, 2, 1, 4, 20, 1, 2, 127, 20, 0, 1];
            let Some(Value::Integer(ifx)) = a.entries.get(&key) else {
                panic!("{}: no ipAdEntIfIndex for the address", p.name);
            };
            key = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 6, *ifx as u32];
            let Some(Value::OctetString(mac)) = a.entries.get(&key) else {
                panic!("{}: no ifPhysAddress", p.name);
            };
            let text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(text.join(":"), a.identity.mac, "{}", p.name);
            assert!(a.dynamic.values().any(|d| *d == Dynamic::Uptime));
        }
    }

    #[test]
    fn printer_profiles_carry_the_model_and_serial() {
        assert!(printers().count() >= 4);
        for p in printers() {
            let meta = p.printer.expect("printer");
            let inst = p.instantiate(ip("127.20.3.4"), None).expect(p.name);
            let has = |needle: &[u8]| {
                inst.entries
                    .values()
                    .any(|v| matches!(v, Value::OctetString(b) if b == needle))
            };
            let in_descr = matches!(
                inst.entries.get(&vec![1, 3, 6, 1, 2, 1, 1, 1, 0]),
                Some(Value::OctetString(d)) if d.starts_with(meta.model.as_bytes())
            );
            assert!(has(meta.model.as_bytes()) || in_descr, "{}: model", p.name);
            assert!(has(inst.identity.serial.as_bytes()), "{}: serial", p.name);
            assert!(
                inst.dynamic.values().any(|d| *d == Dynamic::Total),
                "{}",
                p.name
            );
        }
        assert!(by_name("switch").is_some_and(|p| p.printer.is_none()));
    }

    #[test]
    fn faults_change_the_data() {
        let p = by_name("hp_color_mfp").expect("hp");
        let plain = p.instantiate(ip("127.20.0.9"), None).expect("plain");
        let huge = p
            .instantiate(ip("127.20.0.9"), Some(Fault::HugeTable))
            .expect("huge");
        assert!(huge.entries.len() > plain.entries.len() + 10_000);
        let wrong = p
            .instantiate(ip("127.20.0.9"), Some(Fault::WrongTypes))
            .expect("wrong");
        assert!(matches!(
            wrong
                .entries
                .get(&vec![1, 3, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1]),
            Some(Value::ObjectId(_))
        ));
        assert!(!wrong
            .dynamic
            .contains_key(&vec![1, 3, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1]));
    }
}
