//! Who is looking at the console, what they may change, and how refusals and failures are
//! answered (an HTML page, never internal text).

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use super::pages::Layout;
use super::session::{self, Session};
use super::{client, SESSION_COOKIE};
use crate::api::{Admin, ApiError, AppState};
use crate::tenants::{Principal, Role};

/// A console request's viewer: a signed-in session, or (when `public_demo` is set and there is
/// no session) the demo tenant, read-only.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    /// `None` for the demo.
    pub session: Option<Session>,
}

impl Viewer {
    pub fn is_demo(&self) -> bool {
        self.session.is_none()
    }

    /// Whether write controls are shown: a session of an admin token.
    pub fn can_write(&self) -> bool {
        self.session.is_some() && self.principal.role == Role::Admin
    }

    /// The synchronizer token forms carry (empty in the demo, which renders no form).
    pub fn csrf(&self) -> String {
        self.session.as_ref().map(|s| s.csrf.clone()).unwrap_or_default()
    }

    /// The frame of a page titled `title` under navigation entry `active`.
    pub fn layout(&self, title: impl Into<String>, active: &'static str) -> Layout {
        Layout {
            title: title.into(),
            active,
            demo: self.is_demo(),
            read_only: self.principal.role != Role::Admin,
            csrf: self.session.as_ref().map(|s| s.csrf.clone()),
            live_url: String::new(),
        }
    }

    /// The admin principal for a write posted with `form`, or the refusal: never in the demo,
    /// only with the session's synchronizer token, only for an admin token.
    pub fn writer(&self, form: &Form, state: &AppState) -> Result<Admin, ConsoleError> {
        let Some(session) = &self.session else {
            state.metrics.console_refusal("demo");
            return Err(ConsoleError::Forbidden("this is a read-only demo: nothing can be changed".into()));
        };
        if !session::same_secret(form.get("csrf").unwrap_or_default(), &session.csrf) {
            state.metrics.console_refusal("csrf");
            return Err(ConsoleError::Forbidden(
                "the form's security token does not match this session: reload the page and try again".into(),
            ));
        }
        Admin::check(self.principal.clone()).map_err(|_| {
            state.metrics.console_refusal("read_only");
            ConsoleError::Forbidden("this session's token is read-only: it cannot change anything".into())
        })
    }
}

/// A posted form that may change something: the [`Viewer`], its form and the [`Admin`] that
/// [`Viewer::writer`] gave for them (the demo, a missing or wrong synchronizer token and a
/// read-only token are refused before the handler runs). It reads the body, so it is a handler's
/// last argument.
pub struct Write {
    pub state: AppState,
    pub admin: Admin,
    pub form: Form,
}

impl FromRequest<AppState> for Write {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let form = Form::from_request(Request::from_parts(parts, body), state).await?;
        let admin = viewer.writer(&form, state)?;
        Ok(Self { state: state.clone(), admin, form })
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(viewer) = parts.extensions.get::<Viewer>() {
            return Ok(viewer.clone());
        }
        let idle = std::time::Duration::from_secs(state.config.console_session_idle_s);
        let found = match client::cookie(&parts.headers, SESSION_COOKIE) {
            Some(id) => session::lookup(&state.pool, id, idle).await.map_err(ApiError::from)?,
            None => None,
        };
        let viewer = match (found, state.config.public_demo) {
            (Some(session), _) => Viewer { principal: session.principal.clone(), session: Some(session) },
            (None, Some(tenant_id)) => Viewer {
                principal: Principal { tenant_id, token_id: Uuid::nil(), role: Role::ReadOnly },
                session: None,
            },
            (None, None) => return Err(ConsoleError::SignIn),
        };
        parts.extensions.insert(viewer.clone());
        Ok(viewer)
    }
}

/// A posted `application/x-www-form-urlencoded` body.
#[derive(Debug, Clone, Default)]
pub struct Form(pub BTreeMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = form_bytes(request, state).await?;
        Ok(Form(url::form_urlencoded::parse(&bytes).into_owned().collect()))
    }
}

/// The body of a posted `application/x-www-form-urlencoded` form.
async fn form_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ConsoleError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ConsoleError::BadRequest(
            "the form must be posted as application/x-www-form-urlencoded".into(),
        ));
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|_| ConsoleError::BadRequest("the form is too large or could not be read".into()))
}

/// A posted form with its repeated fields kept in order (checkbox lists), and as a [`Form`].
#[derive(Debug, Clone, Default)]
pub struct RawForm {
    pub pairs: Vec<(String, String)>,
    pub form: Form,
}

impl<S: Send + Sync> FromRequest<S> for RawForm {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = form_bytes(request, state).await?;
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&bytes).into_owned().collect();
        let form = Form(pairs.iter().cloned().collect());
        Ok(RawForm { pairs, form })
    }
}

/// Why a console request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session (and no demo): to the sign-in page.
    #[error("sign in first")]
    SignIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Unauthorized => ConsoleError::SignIn,
            ApiError::ReadOnly => ConsoleError::Forbidden("this token is read-only".into()),
            ApiError::NotFound | ApiError::NotRecorded(_) => ConsoleError::NotFound,
            ApiError::Validation(fields) => ConsoleError::BadRequest(
                fields
                    .iter()
                    .map(|(field, message)| format!("{field}: {message}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ApiError::BadRequest(message) => ConsoleError::BadRequest(message),
            ApiError::Conflict(message) => ConsoleError::Conflict(message),
            ApiError::UnsupportedMediaType | ApiError::PayloadTooLarge => {
                ConsoleError::BadRequest(error.to_string())
            }
            ApiError::Quota(_) | ApiError::RequestRate(_) => ConsoleError::BadRequest(error.to_string()),
            ApiError::RateLimited(seconds) | ApiError::AuthThrottled(seconds) => {
                ConsoleError::BadRequest(format!("too many requests; retry in {seconds} s"))
            }
            // The console neither streams through the API nor reaches a wrong method of it.
            ApiError::StreamsBusy(_) | ApiError::MethodNotAllowed => {
                ConsoleError::BadRequest(error.to_string())
            }
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => ConsoleError::Internal(cause),
        }
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(error: askama::Error) -> Self {
        ConsoleError::Internal(anyhow::Error::new(error).context("rendering a console page"))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            ConsoleError::SignIn => return Redirect::to("/console/sign-in").into_response(),
            ConsoleError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            ConsoleError::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            ConsoleError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Cannot do that"),
            ConsoleError::Conflict(_) => (StatusCode::CONFLICT, "Cannot do that"),
            ConsoleError::Internal(cause) => {
                tracing::error!(error = %shared::error::Chain(cause.as_ref()), "console request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        };
        let message = match &self {
            ConsoleError::Internal(_) => {
                "the page could not be built; the error is in the control plane's log".to_owned()
            }
            ConsoleError::NotFound => "there is nothing here, or it belongs to another tenant".to_owned(),
            other => other.to_string(),
        };
        crate::web::render_with(status, &crate::web::ErrorPage { title, message: &message })
    }
}

/// A rendered page with `status` (a template that fails to render is logged and answered 500).
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    crate::web::render_with(status, template)
}
