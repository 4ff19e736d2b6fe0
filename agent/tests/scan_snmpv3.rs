//! SNMPv3 against net-snmp's real `snmpd`, started by each test in the
//! foreground on a loopback address of its own, with a generated
//! configuration (`-C -c`: no system files) and its persistent directory in
//! a tempdir (nothing under /var/lib). The snmpd is dressed as a printer
//! (`override` of two Printer-MIB objects) so `dwa-agent scan` reports it.
//! Skips (with a message) when `snmpd` is not installed; `scripts/test.sh`
//! installs it.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dwa_agent::telemetry::snmp::{answered, Client, SnmpError, Version};
use dwa_agent::telemetry::v3::{V3Failure, V3Input, V3Security};
use dwa_agent::telemetry::Value;
use serde_json::Value as Json;

const SYS_DESCR: &str = "HP LaserJet v3 test printer";
const SERIAL: &str = "V3SERIAL42";

/// (protocol, pass phrase), as net-snmp's `createUser` spells them.
type Key = (&'static str, &'static str);

/// (user, auth protocol, auth pass phrase, privacy key); the `rouser`
/// level follows: `priv` with a privacy key, `auth` without.
const USERS: &[(&str, &str, &str, Option<Key>)] = &[
    ("shaaes", "SHA", "auth-pass-1", Some(("AES", "priv-pass-1"))),
    ("md5auth", "MD5", "md5-pass-22", None),
    (
        "sha256des",
        "SHA-256",
        "auth-pass-3",
        Some(("DES", "priv-pass-3")),
    ),
    (
        "sha224aes",
        "SHA-224",
        "auth-pass-4",
        Some(("AES", "priv-pass-4")),
    ),
    (
        "sha384aes192",
        "SHA-384",
        "auth-pass-5",
        Some(("AES-192", "priv-pass-5")),
    ),
    (
        "sha512aes256",
        "SHA-512",
        "auth-pass-6",
        Some(("AES-256", "priv-pass-6")),
    ),
    // Keys shorter than AES-192/256 need: Blumenthal extension ...
    (
        "md5aes256",
        "MD5",
        "auth-pass-7",
        Some(("AES-256", "priv-pass-7")),
    ),
    // ... and Reeder ("Cisco") extension.
    (
        "shaaes256c",
        "SHA",
        "auth-pass-8",
        Some(("AES-256-C", "priv-pass-8")),
    ),
];

struct Snmpd {
    child: Child,
    ip: Ipv4Addr,
    port: u16,
    dir: tempfile::TempDir,
}

/// Closing the guard shell's stdin stops snmpd (see `start`).
impl Drop for Snmpd {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Snmpd {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("snmpd.log")).unwrap_or_default()
    }
}

fn snmpd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("snmpd"))
        .find(|p| p.is_file())
}

/// A loopback address of our own (not the snmpsim tests' 127.100-199/16),
/// so parallel test runs do not collide.
fn loopback(last: u8) -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 200 + (pid % 50) as u8, (pid / 50 % 250) as u8, last)
}

fn security(user: &str, auth: Option<(&str, &str)>, privacy: Option<(&str, &str)>) -> V3Security {
    V3Input {
        user: user.into(),
        level: None,
        auth_protocol: auth.map(|(p, _)| p.parse().unwrap()),
        auth_password: auth.map(|(_, w)| dwa_agent::config::Secret(w.into())),
        priv_protocol: privacy.map(|(p, _)| p.parse().unwrap()),
        priv_password: privacy.map(|(_, w)| dwa_agent::config::Secret(w.into())),
    }
    .build()
    .unwrap()
}

fn client(d: &Snmpd, sec: V3Security) -> Client {
    Client::new(d.addr(), Version::V3(sec), Duration::from_millis(500), 1)
}

/// The right credentials of `USERS[i]`.
fn user(i: usize) -> V3Security {
    let (name, ap, aw, privacy) = USERS[i];
    security(name, Some((ap, aw)), privacy)
}

/// Start snmpd on `loopback(last)`; `None` (after a SKIP message) when
/// snmpd is not installed. Returns once it answers an authPriv request.
async fn start(last: u8) -> Option<Snmpd> {
    let Some(bin) = snmpd_binary() else {
        eprintln!("SKIP: snmpd not installed (Debian package snmpd; scripts/test.sh installs it)");
        return None;
    };
    let ip = loopback(last);
    let port = UdpSocket::bind((ip, 0))
        .expect("bind loopback")
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let persist = dir.path().join("persist");
    std::fs::create_dir(&persist).unwrap();
    let mut conf = format!("[snmp] persistentDir {}\n", persist.display());
    for (name, ap, aw, privacy) in USERS {
        match privacy {
            Some((pp, pw)) => {
                conf += &format!("createUser {name} {ap} {aw} {pp} {pw}\nrouser {name} priv\n")
            }
            None => conf += &format!("createUser {name} {ap} {aw}\nrouser {name} auth\n"),
        }
    }
    conf += &format!(
        "rocommunity public 127.0.0.0/8\n\
         sysName v3-test-host\n\
         sysLocation lab-rack-7\n\
         sysDescr {SYS_DESCR}\n\
         override 1.3.6.1.2.1.43.5.1.1.17.1 octet_str \"{SERIAL}\"\n\
         override 1.3.6.1.2.1.43.10.2.1.4.1.1 counter 12345\n"
    );
    let conf_path = dir.path().join("snmpd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("snmpd.log")).unwrap();
    // snmpd runs under a shell that stops it when its stdin closes: when
    // `Snmpd` drops, and also when this test process dies without running
    // destructors (a panic in another thread's abort, SIGKILL), so no
    // daemon outlives the test.
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"bin=$1; shift; "$bin" "$@" </dev/null & pid=$!; read _; kill $pid; wait $pid"#)
        .arg("sh")
        .arg(bin)
        .args(["-f", "-Lo", "-C", "-c"])
        .arg(&conf_path)
        .arg(format!("udp:{ip}:{port}"))
        // No MIB files (numeric OIDs only) and no system configuration.
        .env("MIBS", "")
        .env("MIBDIRS", dir.path().join("no-mibs"))
        .env("SNMPCONFPATH", dir.path())
        .env("SNMP_PERSISTENT_DIR", &persist)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start snmpd");
    let d = Snmpd {
        child,
        ip,
        port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client(&d, user(0)).probe().await {
            assert!(answered(&r));
            return Some(d);
        }
        assert!(
            Instant::now() < deadline,
            "snmpd did not answer in 20 s:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::OctetString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected a string, got {other:?}"),
    }
}

#[tokio::test]
async fn every_auth_and_priv_protocol_reads_the_system_group() {
    let Some(d) = start(1).await else { return };
    for (i, (name, ap, _, privacy)) in USERS.iter().enumerate() {
        let c = client(&d, user(i));
        let probe = c
            .probe()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", d.log()));
        assert!(answered(&probe), "{name}");
        // GETBULK walk over the same (kept) v3 session.
        let (walk, err) = c.walk(&[&[1, 3, 6, 1, 2, 1, 1]], 100).await;
        assert!(err.is_none(), "{name} ({ap}/{privacy:?}): {err:?}");
        assert_eq!(text(walk.get(&[1, 3, 6, 1, 2, 1, 1, 5, 0])), "v3-test-host");
        assert_eq!(text(walk.get(&[1, 3, 6, 1, 2, 1, 1, 6, 0])), "lab-rack-7");
        assert_eq!(text(walk.get(&[1, 3, 6, 1, 2, 1, 1, 1, 0])), SYS_DESCR);
    }
}

/// The failure of a probe with `sec`, which must come as an answer, fast.
async fn refusal(d: &Snmpd, sec: V3Security) -> (V3Failure, String) {
    let t = Instant::now();
    let e = client(d, sec).probe().await.expect_err("refused");
    match e {
        SnmpError::V3 { failure, message } => {
            assert!(!message.contains('\n'), "{message}");
            for (_, _, aw, privacy) in USERS {
                assert!(!message.contains(aw), "{message}");
                assert!(privacy.is_none_or(|(_, pw)| !message.contains(pw)));
            }
            // A wrong priv key is silence: retries (2 × 500 ms) then one
            // authNoPriv request; refusals are immediate.
            assert!(t.elapsed() < Duration::from_millis(2500), "{message}");
            (failure, message)
        }
        other => panic!("expected an SNMPv3 refusal, got {other:?}\n{}", d.log()),
    }
}

#[tokio::test]
async fn wrong_credentials_are_named_not_timeouts() {
    let Some(d) = start(2).await else { return };
    let aes = Some(("aes", "priv-pass-1"));

    // Wrong auth pass phrase: the agent reports a wrong digest.
    let t = Instant::now();
    let (f, m) = refusal(&d, security("shaaes", Some(("sha", "wrong-pass")), aes)).await;
    assert_eq!(f, V3Failure::WrongAuth, "{m}");
    assert_eq!(
        m,
        "SNMPv3 authentication failed for user \"shaaes\": wrong auth password or protocol"
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "no retries or timeouts"
    );

    // Wrong auth protocol reads the same.
    let (f, _) = refusal(&d, security("md5auth", Some(("sha", "md5-pass-22")), None)).await;
    assert_eq!(f, V3Failure::WrongAuth);

    // Wrong priv pass phrase or protocol: snmpd drops what it cannot
    // decrypt; authNoPriv with the same key works, so privacy is named.
    let (f, m) = refusal(
        &d,
        security(
            "shaaes",
            Some(("sha", "auth-pass-1")),
            Some(("aes", "wrong-pass")),
        ),
    )
    .await;
    assert_eq!(f, V3Failure::Privacy, "{m}");
    assert!(m.contains("wrong priv password or protocol"), "{m}");
    let (f, _) = refusal(
        &d,
        security(
            "shaaes",
            Some(("sha", "auth-pass-1")),
            Some(("des", "priv-pass-1")),
        ),
    )
    .await;
    assert_eq!(f, V3Failure::Privacy);
    // authPriv for a user without a privacy key (unsupportedSecLevel).
    let (f, _) = refusal(
        &d,
        security(
            "md5auth",
            Some(("md5", "md5-pass-22")),
            Some(("aes", "md5-pass-22")),
        ),
    )
    .await;
    assert_eq!(f, V3Failure::Privacy);

    // Unknown user, at any level.
    let (f, m) = refusal(&d, security("nobody", Some(("sha", "auth-pass-1")), aes)).await;
    assert_eq!(f, V3Failure::UnknownUser, "{m}");
    assert_eq!(m, "SNMPv3 user \"nobody\" is unknown to the agent");
    let (f, _) = refusal(&d, security("nobody", None, None)).await;
    assert_eq!(f, V3Failure::UnknownUser);

    // A known user below its `rouser` level: authorizationError.
    let (f, m) = refusal(&d, security("md5auth", None, None)).await;
    assert_eq!(f, V3Failure::AccessDenied, "{m}");
}

// ------------------------------------------------------------- the CLI

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwa-agent"));
    cmd.args(args).env("DWA_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run dwa-agent")
}

fn scan(d: &Snmpd, extra: &[&str], env: &[(&str, &str)]) -> (Vec<Json>, String) {
    let ip = d.ip.to_string();
    let port = d.port.to_string();
    let mut args = vec!["scan", &ip, "--port", &port, "--timeout", "500ms"];
    args.extend(["--format", "json"]);
    args.extend(extra);
    let out = agent(&args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    let recs: Vec<Json> = serde_json::from_slice(&out.stdout).expect("JSON array");
    (recs, stderr)
}

fn check_printer(recs: &[Json], d: &Snmpd) {
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["address"], d.ip.to_string());
    assert_eq!(r["sys_name"], "v3-test-host");
    assert_eq!(r["sys_location"], "lab-rack-7");
    assert_eq!(r["manufacturer"], "HP");
    assert_eq!(r["serial"], SERIAL);
    assert_eq!(r["counters"]["total"].as_u64(), Some(12345));
}

const SHAAES: &[&str] = &[
    "--v3-user",
    "shaaes",
    "--v3-level",
    "authPriv",
    "--v3-auth",
    "sha",
    "--v3-auth-password-env",
    "T_V3_AUTH",
    "--v3-priv",
    "aes",
    "--v3-priv-password-env",
    "T_V3_PRIV",
];

#[tokio::test]
async fn scan_command_line_and_config() {
    let Some(d) = start(3).await else { return };

    // Pass phrases from the environment.
    let good = [("T_V3_AUTH", "auth-pass-1"), ("T_V3_PRIV", "priv-pass-1")];
    let (recs, _) = scan(&d, SHAAES, &good);
    check_printer(&recs, &d);

    // From a file (trailing newline ignored), authNoPriv MD5, level implied.
    let file = d.dir.path().join("md5.pass");
    std::fs::write(&file, "md5-pass-22\n").unwrap();
    let file = file.to_string_lossy();
    let args = [
        "--v3-user",
        "md5auth",
        "--v3-auth",
        "MD5",
        "--v3-auth-password-file",
        &file,
    ];
    let (recs, _) = scan(&d, &args, &[]);
    check_printer(&recs, &d);

    // A wrong pass phrase: no device, and a warning that says why. The
    // agent also answers v2c "public", which is not tried without
    // --community ...
    let bad = [("T_V3_AUTH", "wrong-pass"), ("T_V3_PRIV", "priv-pass-1")];
    let (recs, stderr) = scan(&d, SHAAES, &bad);
    assert!(recs.is_empty(), "{recs:?}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "warning: {}: SNMPv3 authentication failed for user \"shaaes\": wrong auth password or protocol",
            d.ip
        )
    );
    // ... and is tried after the v3 user when given.
    let mut with_public = SHAAES.to_vec();
    with_public.extend(["--community", "public"]);
    let (recs, stderr) = scan(&d, &with_public, &bad);
    check_printer(&recs, &d);
    assert!(stderr.is_empty(), "{stderr}");

    // Wrong priv pass phrase: named as such.
    let bad = [("T_V3_AUTH", "auth-pass-1"), ("T_V3_PRIV", "wrong-pass")];
    let (recs, stderr) = scan(&d, SHAAES, &bad);
    assert!(recs.is_empty());
    assert!(stderr.contains("wrong priv password"), "{stderr}");

    // agent.toml [[scan.v3]]: users tried in order (an unknown one first),
    // port from [scan]; no v2c since no communities are configured.
    let cfg = d.dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"relay = "https://relay.example.com"
agent_id = "agt_abc"
ssh_port = 2222
[pins]
ssh_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEoJ2R6RKN+L13hBrfKOGVTkd84ksDGoIIsgV56mDNyY"
tls_fingerprint = "b081c0d8742638c16991c636167f40b45f630ab668e76fe22dce6f074a51759d"
[scan]
snmp_port = {}
[[scan.v3]]
user = "nobody"
level = "authNoPriv"
auth_protocol = "sha"
auth_password = "whatever-pass"
[[scan.v3]]
user = "sha512aes256"
level = "authPriv"
auth_protocol = "SHA-512"
auth_password = "auth-pass-6"
priv_protocol = "AES-256"
priv_password = "priv-pass-6"
"#,
            d.port
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy();
    let ip = d.ip.to_string();
    let out = agent(&["scan", &ip, "--config", &cfg, "--format", "json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Json> = serde_json::from_slice(&out.stdout).expect("JSON");
    check_printer(&recs, &d);
}

#[test]
fn v3_passwords_never_come_from_argv() {
    // There is no flag that takes a pass phrase itself.
    let out = agent(
        &[
            "scan",
            "127.0.0.1",
            "--v3-user",
            "u",
            "--v3-auth-password",
            "secret-pass",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "clap refuses the flag");
    // A missing variable, a short pass phrase and a bad protocol are one-line
    // errors naming the flag; nothing is sent.
    for (args, env, flag) in [
        (
            vec![
                "--v3-user",
                "u",
                "--v3-auth",
                "sha",
                "--v3-auth-password-env",
                "T_UNSET_VAR",
            ],
            vec![],
            "--v3-auth-password-env",
        ),
        (
            vec![
                "--v3-user",
                "u",
                "--v3-auth",
                "sha",
                "--v3-auth-password-env",
                "T_SHORT",
            ],
            vec![("T_SHORT", "short")],
            "--v3-auth-password",
        ),
        (
            vec!["--v3-user", "u", "--v3-auth-password-env", "T_LONG"],
            vec![("T_LONG", "long-enough")],
            "--v3-auth",
        ),
    ] {
        let mut a = vec!["scan", "127.0.0.1"];
        a.extend(args);
        let out = agent(&a, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(flag), "{err}");
    }
    let out = agent(
        &["scan", "127.0.0.1", "--v3-user", "u", "--v3-auth", "sha3"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown auth protocol"));
}
