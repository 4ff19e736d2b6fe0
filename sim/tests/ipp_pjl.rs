//! The printers' IPP and PJL answers over real sockets, consistent with
//! their SNMP profile. Addresses: 127.23.x.y (no other test binds there).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::net::IpAddr;

use dwa_sim::{Fleet, FleetConfig, SnmpOptions};
use ipp::model::DelimiterTag;
use ipp::operation::{GetPrinterAttributes, IppOperation};
use ipp::parser::IppParser;
use ipp::reader::IppReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn fleet(addr: &str) -> Fleet {
    let addr: IpAddr = addr.parse().expect("ip");
    Fleet::start(FleetConfig {
        ipp_port: Some(0),
        pjl_port: Some(0),
        ..FleetConfig::snmp(vec![addr], SnmpOptions::default())
    })
    .await
    .expect("fleet")
}

#[tokio::test]
async fn pjl_info_id_names_the_snmp_model() {
    let f = fleet("127.23.0.1").await;
    let p = &f.printers[0];
    let model = p
        .snmp
        .as_ref()
        .and_then(|s| s.identity.model)
        .expect("model");
    assert_eq!(p.identity.make_and_model, model);
    let mut s = TcpStream::connect((p.addr, p.pjl_port.expect("pjl")))
        .await
        .expect("connect");
    s.write_all(b"\x1b%-12345X@PJL\r\n@PJL INFO ID\r\n@PJL INFO STATUS\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.iter().filter(|b| **b == 0x0c).count() < 2 {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(&format!("\"{model}\"")), "{text}");
    assert!(text.contains("ONLINE=TRUE"), "{text}");
    f.shutdown().await;
}

#[tokio::test]
async fn ipp_get_printer_attributes_over_http() {
    let f = fleet("127.23.0.2").await;
    let p = &f.printers[0];
    let port = p.ipp_port.expect("ipp");
    let uri = format!("ipp://{}:{port}/ipp/print", p.addr)
        .parse()
        .expect("uri");
    let body = GetPrinterAttributes::new(uri)
        .expect("op")
        .into_ipp_request()
        .to_bytes();
    let mut s = TcpStream::connect((p.addr, port)).await.expect("connect");
    let head = format!(
        "POST /ipp/print HTTP/1.1\r\nHost: {}:{port}\r\nContent-Type: application/ipp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        p.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(&body).await.expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.expect("read");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head")
        + 4;
    let head = String::from_utf8_lossy(&resp[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let r = IppParser::new(IppReader::new(Cursor::new(resp[split..].to_vec())))
        .parse()
        .expect("IPP answer");
    let g = r
        .attributes()
        .groups_of(DelimiterTag::PrinterAttributes)
        .next()
        .expect("printer group");
    assert_eq!(
        g.get("printer-make-and-model")
            .expect("model")
            .value()
            .to_string(),
        p.identity.make_and_model
    );
    assert_eq!(
        g.get("printer-state").expect("state").value().to_string(),
        "3"
    );
    f.shutdown().await;
}
