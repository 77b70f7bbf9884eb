//! Sign-in (an API token exchanged for a server-side session, rate-limited per client,
//! anti-forgery by double submit) and sign-out.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::Result;
use crate::api::{ApiError, AppState};
use crate::console::pages;
use crate::console::viewer::{page, Form};
use crate::console::{client, session, ConsoleError, Viewer, SESSION_COOKIE, SIGN_IN_COOKIE};
use crate::tenants;

/// Whether this request's cookies get `Secure` (see [`client::secure`]).
fn secure(state: &AppState, peer: std::net::IpAddr, headers: &HeaderMap) -> bool {
    client::secure(state.config.console_cookie_secure, peer, headers, &state.config.trusted_proxies)
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The sign-in form with a fresh anti-forgery value (cookie and hidden field).
fn sign_in_form(state: &AppState, secure: bool, status: StatusCode, error: Option<String>) -> Response {
    let csrf = session::random_token();
    let form = pages::SignInPage { csrf: csrf.clone(), error, demo: state.config.public_demo.is_some() };
    with_cookies(page(status, &form), &[client::set_cookie(SIGN_IN_COOKIE, &csrf, 3_600, secure)])
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response> {
    let (mut parts, _) = request.into_parts();
    let peer = client::peer(&parts);
    let signed_in =
        match <Viewer as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state)
            .await
        {
            Ok(viewer) => !viewer.is_demo(),
            Err(ConsoleError::SignIn) => false,
            Err(other) => return Err(other),
        };
    if signed_in {
        return Ok(Redirect::to("/console/domains").into_response());
    }
    Ok(sign_in_form(&state, secure(&state, peer, &parts.headers), StatusCode::OK, None))
}

pub async fn sign_in(State(state): State<AppState>, request: axum::extract::Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let peer = client::peer(&parts);
    let secure = secure(&state, peer, &parts.headers);
    let addr = client::client_addr(peer, &parts.headers, &state.config.trusted_proxies);
    if let Err(wait) = state.sign_in_limiter.check(addr) {
        state.metrics.console_sign_in("rate_limited");
        tracing::warn!(client = %addr, "console sign-in rate limited");
        let message =
            format!("too many sign-in attempts from this address: try again in {} s", wait.as_secs());
        let mut response = sign_in_form(&state, secure, StatusCode::TOO_MANY_REQUESTS, Some(message));
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        return Ok(response);
    }
    let cookie = client::cookie(&parts.headers, SIGN_IN_COOKIE).map(str::to_owned);
    let request = axum::extract::Request::from_parts(parts, body);
    let form = <Form as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    let posted = form.get("csrf").unwrap_or_default();
    if !cookie.as_deref().is_some_and(|c| !c.is_empty() && session::same_secret(c, posted)) {
        state.metrics.console_sign_in("csrf");
        let message = "the sign-in form expired or was not sent from this site: please try again".to_owned();
        return Ok(sign_in_form(&state, secure, StatusCode::FORBIDDEN, Some(message)));
    }
    let token = form.get("token").unwrap_or_default().trim();
    let Some(principal) = tenants::authenticate(&state.pool, token).await.map_err(ApiError::from)? else {
        state.metrics.console_sign_in("invalid_token");
        tracing::info!(client = %addr, "console sign-in with an unknown or revoked token");
        let message = "this token is not valid: it is unknown or revoked".to_owned();
        return Ok(sign_in_form(&state, secure, StatusCode::UNAUTHORIZED, Some(message)));
    };
    let ttl = Duration::from_secs(state.config.console_session_ttl_s);
    let (id, _) = session::create(&state.pool, &principal, ttl).await.map_err(ApiError::from)?;
    state.metrics.console_sign_in("ok");
    tracing::info!(tenant_id = %principal.tenant_id, token_id = %principal.token_id, role = principal.role.as_str(), "console session opened");
    Ok(with_cookies(
        Redirect::to("/console/domains").into_response(),
        &[
            client::set_cookie(SESSION_COOKIE, &id, ttl.as_secs(), secure),
            client::set_cookie(SIGN_IN_COOKIE, "", 0, secure),
        ],
    ))
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    form: Form,
) -> Result<Response> {
    let Some(current) = &viewer.session else { return Ok(Redirect::to("/console/sign-in").into_response()) };
    if !session::same_secret(form.get("csrf").unwrap_or_default(), &current.csrf) {
        state.metrics.console_refusal("csrf");
        return Err(ConsoleError::Forbidden(
            "the form's security token does not match this session: reload the page and try again".into(),
        ));
    }
    if let Some(id) = client::cookie(&headers, SESSION_COOKIE) {
        session::delete(&state.pool, id).await.map_err(ApiError::from)?;
    }
    tracing::info!(token_id = %viewer.principal.token_id, "console session closed");
    // The cookie is cleared with the attributes it was set with; `Secure` does not matter for
    // a deletion, so none is claimed.
    Ok(with_cookies(
        Redirect::to("/console/sign-in").into_response(),
        &[client::set_cookie(SESSION_COOKIE, "", 0, false)],
    ))
}
