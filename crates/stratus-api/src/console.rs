//! The web console (`/`): a page, its script and style, and the charting library, compiled
//! into the binary so nothing is fetched at run time and nothing needs building. The files are
//! in `crates/stratus-api/console/`; they call the public API with the tab's token, so the
//! console can do exactly what that token can. Serving them needs no token (they hold no data);
//! the `Host` check still applies.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Every console file: path, content type, body.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/console.js"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/console.css"),
    ),
    (
        "/console/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "/console/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/vendor/uplot/uPlot.min.css"),
    ),
];

/// Scripts and styles only from this server, no framing, no referrer: a token in the tab is
/// never sent elsewhere.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'self'";

/// Whether `path` is a console file (served without a token).
pub fn is_console(path: &str) -> bool {
    FILES.iter().any(|(p, _, _)| *p == path)
}

/// The file at `path`, if it is one.
pub fn file(path: &str) -> Option<Response> {
    let (_, content_type, body) = FILES.iter().find(|(p, _, _)| *p == path)?;
    let mut resp = body.to_vec().into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Always the files of the running binary, after an upgrade too.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(resp)
}
