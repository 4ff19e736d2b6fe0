//! The embedded web server's content. Like real printers' pages, every link,
//! form action, stylesheet, script and frame is an absolute URL naming the
//! printer's own address — the thing a remote-access proxy has to rewrite.

/// A 1×1 PNG.
pub(crate) const LOGO_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x90, 0xf7, 0x9b, 0x05,
    0x00, 0x01, 0x97, 0x01, 0x08, 0x54, 0x3e, 0x51, 0x9e, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Printed on every page: what tests and people look for.
pub(crate) const MODEL: &str = "DWA SimPrinter 4000";

fn head(origin: &str, title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{MODEL} - {title}</title>\n\
         <link rel=\"stylesheet\" href=\"{origin}/style.css\">\n\
         <script src=\"{origin}/app.js\"></script></head>\n"
    )
}

fn nav(origin: &str) -> String {
    format!(
        "<p class=\"nav\"><a href=\"{origin}/status.html\">Status</a> | \
         <a href=\"{origin}/login.html\">Log in</a> | \
         <a href=\"{origin}/compressed.html\">Supplies</a></p>\n\
         <img src=\"{origin}/logo.png\" alt=\"logo\">\n"
    )
}

pub(crate) fn login(origin: &str, addr: &str) -> String {
    format!(
        "{head}<body>\n<h1>{MODEL} at {addr}</h1>\n{nav}\
         <form method=\"post\" action=\"{origin}/login\">\n\
         <label>User name <input type=\"text\" name=\"username\"></label>\n\
         <label>Password <input type=\"password\" name=\"password\"></label>\n\
         <input type=\"submit\" value=\"Log in\">\n</form>\n</body></html>\n",
        head = head(origin, "Log in"),
        nav = nav(origin),
    )
}

/// `ws_url` is absolute (`ws://host/ws` or `wss://host/ws`).
pub(crate) fn status(origin: &str, addr: &str, ws_url: &str) -> String {
    format!(
        "{head}<body>\n<h1>{MODEL} at {addr}</h1>\n{nav}\
         <p id=\"state\">Printer status: Ready</p>\n\
         <p>Address: {addr}</p>\n\
         <iframe src=\"{origin}/frame.html\" width=\"400\" height=\"100\"></iframe>\n\
         <script>\nvar ws = new WebSocket(\"{ws_url}\");\n\
         ws.onmessage = function (e) {{ document.getElementById(\"live\").textContent = e.data; }};\n\
         </script>\n<pre id=\"live\"></pre>\n</body></html>\n",
        head = head(origin, "Status"),
        nav = nav(origin),
    )
}

pub(crate) fn frame(origin: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><link rel=\"stylesheet\" href=\"{origin}/style.css\"></head>\n\
         <body><p>Toner: 80%</p><a href=\"{origin}/status.html\" target=\"_top\">Refresh</a>\n\
         <img src=\"{origin}/logo.png\" alt=\"logo\"></body></html>\n"
    )
}

pub(crate) fn style(origin: &str) -> String {
    format!(
        "body {{ font-family: sans-serif; background: #fff url({origin}/logo.png) no-repeat top right; }}\n\
         .nav a {{ color: #036; }}\n"
    )
}

pub(crate) fn app_js(origin: &str) -> String {
    format!(
        "var base = \"{origin}/\";\n\
         function go(page) {{ window.location.href = base + page; }}\n"
    )
}

/// Big enough for gzip to matter; the supplies table repeats.
pub(crate) fn compressed(origin: &str, addr: &str) -> String {
    let mut rows = String::new();
    for (i, colour) in ["Black", "Cyan", "Magenta", "Yellow"]
        .iter()
        .cycle()
        .take(64)
        .enumerate()
    {
        rows.push_str(&format!(
            "<tr><td>{colour} toner {i}</td><td>{pct}%</td>\
             <td><a href=\"{origin}/status.html\">details</a></td></tr>\n",
            pct = 100 - i,
        ));
    }
    format!(
        "{head}<body>\n<h1>{MODEL} at {addr} - Supplies</h1>\n{nav}<table>\n{rows}</table>\n</body></html>\n",
        head = head(origin, "Supplies"),
        nav = nav(origin),
    )
}

pub(crate) fn not_found(path: &str) -> String {
    // The path is echoed escaped: it came off the network.
    let path: String = path
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n\
         <body><h1>Not Found</h1><p>{path} is not on this printer.</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_found_escapes_the_path() {
        let page = super::not_found("/a<script>&\"");
        assert!(page.contains("/a&lt;script&gt;&amp;&quot;"), "{page}");
        assert!(!page.contains("<script>"));
    }
}
