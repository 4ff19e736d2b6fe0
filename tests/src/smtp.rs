//! aiosmtpd on loopback for the e-mail tests: STARTTLS with an rcgen
//! certificate the relay trusts through `smtp.ca_file`, and a small
//! handler that saves each message as JSON (envelope, whether STARTTLS was
//! used, the data). `scripts/test.sh` installs aiosmtpd into
//! `/opt/aiosmtpd`; tests skip without it ([`available`]).

// Test support: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const PYTHON: &str = "/opt/aiosmtpd/bin/python";

/// Saves each message as JSON into the directory given as the handler's
/// argument.
const HANDLER: &str = r#"
import json, os

class Save:
    def __init__(self, out):
        self.out = out
        self.n = 0

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        path = os.path.join(self.out, "%04d.json" % self.n)
        with open(path + ".tmp", "w") as f:
            json.dump({
                "from": envelope.mail_from,
                "rcpt": envelope.rcpt_tos,
                "tls": getattr(session, "ssl", None) is not None,
                "data": envelope.content.decode("utf-8", "replace"),
            }, f)
        os.rename(path + ".tmp", path)
        return "250 OK"
"#;

/// Whether aiosmtpd is installed.
pub fn available() -> bool {
    Path::new(PYTHON).exists()
}

/// A lab directory: the handler, a certificate for 127.0.0.1 (`ca()` is
/// what the relay is given), the output directory and a free port.
pub struct Lab {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub port: u16,
}

impl Lab {
    pub fn new(dir: &Path) -> Lab {
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(dir.join("dwa_save.py"), HANDLER).unwrap();
        // rcgen turns a name that parses as an IP into an IP-address SAN.
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Lab {
            dir: dir.to_path_buf(),
            out,
            port: free_port(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The relay.toml section pointing at this server.
    pub fn smtp_section(&self, digest_interval: &str) -> String {
        format!(
            "\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"dwa@relay.example\"\n\
             ca_file = \"{}\"\ntimeout = \"5s\"\ndigest_interval = \"{digest_interval}\"\n",
            self.port,
            self.ca().display()
        )
    }

    /// Starts the server (STARTTLS required).
    pub fn start(&self) -> Smtp {
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--tlscert")
            .arg(self.dir.join("cert.pem"))
            .arg("--tlskey")
            .arg(self.dir.join("key.pem"))
            .args(["-c", "dwa_save.Save"])
            .arg(&self.out)
            .env("PYTHONPATH", &self.dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("smtpd.log")).unwrap())
            .spawn()
            .expect("aiosmtpd");
        Smtp { child }
    }

    /// The messages saved so far, in arrival order.
    pub fn arrived(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("smtpd.log")).unwrap_or_default()
    }
}

/// The running server; stopped when dropped.
pub struct Smtp {
    child: Child,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
