//! Who may read the admin listener. On loopback (the default, `127.0.0.1:9187`) only this
//! machine can connect, so nothing more is asked unless a token is configured. Bound to any other
//! address it may face a network, so a token from the environment (`SOUNDTREND_ADMIN_TOKEN`) is
//! required, and start-up refuses a non-loopback address without one. `/healthz` and `/readyz`
//! stay open for load balancers and orchestrators; everything else (`/metrics` and the pages)
//! asks for the token as `Authorization: Bearer <token>` or the `soundtrend_admin` cookie, which
//! `/login` sets in a browser (it holds a SHA-256 of the token, never the token itself).

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};

/// The environment variable that holds the admin token.
pub const TOKEN_VAR: &str = "SOUNDTREND_ADMIN_TOKEN";
/// The cookie a browser may carry the token in.
pub const COOKIE: &str = "soundtrend_admin";

/// The token from [`TOKEN_VAR`], if set and not blank.
#[must_use]
pub fn token_from_env() -> Option<SecretString> {
    std::env::var(TOKEN_VAR)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(SecretString::from)
}

/// A non-loopback address without a token is refused: one line naming the key and the fix.
pub fn check_bind(addr: SocketAddr, token: Option<&SecretString>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some() {
        return Ok(());
    }
    Err(format!(
        "config key `admin.listen`: {addr} is reachable from other machines, so the admin endpoint needs a token: set {TOKEN_VAR} (clients send `Authorization: Bearer <token>`), or listen on 127.0.0.1"
    ))
}

/// Middleware: lets the request through when it carries the token, else 401.
pub async fn require_token(
    State(token): State<SecretString>,
    request: Request,
    next: Next,
) -> Response {
    if carries(&request, token.expose_secret()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"soundtrend\"")],
        format!("unauthorized: send `Authorization: Bearer <{TOKEN_VAR}>`, or sign in at /login\n"),
    )
        .into_response()
}

/// `GET /login`: a form asking for the token.
pub async fn login_form() -> Response {
    login_page(StatusCode::OK, "")
}

/// `POST /login` (`token=…`, form-encoded): sets the cookie and goes to `/` when the token is
/// right; else the form again with 401.
pub async fn login(State(token): State<SecretString>, body: String) -> Response {
    let given = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !same(given.trim(), token.expose_secret()) {
        return login_page(StatusCode::UNAUTHORIZED, "That is not the token.");
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        cookie_value(token.expose_secret())
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let page = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "soundtrend: sign in" } link rel="icon" href="data:,"; }
            body style="font:14px system-ui,sans-serif;max-width:420px;margin:60px auto" {
                h1 style="font-size:20px" { "soundtrend" }
                @if !message.is_empty() { p style="color:#b3261e" { (message) } }
                form method="post" action="/login" {
                    label { "Admin token (" (TOKEN_VAR) ") " input type="password" name="token" autofocus; }
                    " " button type="submit" { "Sign in" }
                }
            }
        }
    };
    (status, axum::response::Html(page.into_string())).into_response()
}

/// What the cookie holds: a SHA-256 of the token, hex, so the token itself never sits in a
/// browser's cookie store.
fn cookie_value(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Whether the request carries `token` in its Authorization header or its cookie.
fn carries(request: &Request, token: &str) -> bool {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim(), token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, given)| name == COOKIE && same(given, &cookie_value(token)));
    bearer || cookie
}

/// Compares in time independent of where the strings differ, so the token cannot be guessed
/// byte by byte from response times.
fn same(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let differ = a
        .iter()
        .zip(b)
        .fold(u8::from(a.len() != b.len()), |acc, (x, y)| acc | (x ^ y));
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_bind_needs_a_token_and_loopback_does_not() {
        let token = SecretString::from("t0k3n".to_owned());
        let any: SocketAddr = "0.0.0.0:9187".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9187".parse().unwrap();
        let e = check_bind(any, None).unwrap_err();
        assert!(
            e.starts_with("config key `admin.listen`: 0.0.0.0:9187"),
            "{e}"
        );
        assert!(e.contains(TOKEN_VAR) && !e.contains('\n'), "{e}");
        assert!(check_bind(any, Some(&token)).is_ok());
        assert!(check_bind(local, None).is_ok());
    }

    #[test]
    fn only_the_exact_token_matches() {
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc"));
        assert!(!same("ab", "abc"));
        assert!(!same("abcd", "abc"));
        assert!(!same("", "abc"));
    }
}
