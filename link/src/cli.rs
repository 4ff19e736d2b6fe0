//! What both binaries' `main` share: logging to stderr (filter from
//! `DWA_LOG`, default `info`; text, or one JSON object per line), a tokio
//! runtime, one-line errors with exit code 1, and HOST:PORT parsing.

use std::future::Future;
use std::process::ExitCode;

/// Runs a command to completion. Errors print as `error: ...` (the whole
/// cause chain with `{:#}`) and exit 1.
pub fn run_main<F, E>(command: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, E>>,
    E: std::fmt::Display,
{
    run_main_with(LogFormat::Text, command)
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `fields` (with `message`), and `spans` (each span's fields: agent,
    /// peer, stream, session ...), for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// [`run_main`] with the log format chosen.
pub fn run_main_with<F, E>(format: LogFormat, command: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, E>>,
    E: std::fmt::Display,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("DWA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `HOST:PORT` or `[IPv6]:PORT`; port 1..=65535, host non-empty.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let parts = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => s.rsplit_once(':'),
    };
    let (host, port) =
        parts.ok_or_else(|| format!("expected HOST:PORT or [IPv6]:PORT, got {s:?}"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port in {s:?}"))?;
    if host.is_empty() {
        return Err(format!("expected HOST:PORT, got {s:?}"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("10.0.0.5:80"), Ok(("10.0.0.5".into(), 80)));
        assert_eq!(
            split_host_port("[::ffff:127.0.0.1]:631"),
            Ok(("::ffff:127.0.0.1".into(), 631))
        );
        assert_eq!(
            split_host_port("printer.lan:9100"),
            Ok(("printer.lan".into(), 9100))
        );
        for bad in [
            "",
            "10.0.0.5",
            ":80",
            "host:0",
            "host:99999",
            "[::1]80",
            "host:http",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }
}
