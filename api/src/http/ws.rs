//! `GET /ws/{campaign_id}/{user_id}`: checks the request before the upgrade (unknown campaign
//! 404, bad input 400), answers `101 Switching Protocols` itself, and hands the upgraded
//! connection to the engine with small per-connection codec buffers.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::Resume;
use engine::tokio_tungstenite::WebSocketStream;
use engine::tungstenite::handshake::derive_accept_key;
use engine::tungstenite::protocol::{Role, WebSocketConfig};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{AppState, check_user_id};
use crate::admission::Admitted;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

/// Options of a WebSocket session.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// `deflate`: tick frames as binary raw-deflate frames (`none` or empty: text frames).
    #[param(pattern = "^(?:none|deflate)?$")]
    compress: Option<String>,
    /// `1`: a changed state comes as a merge patch (`state_patch`, with `state_version`) when
    /// this session has the state before; `0`: always the whole state; absent: as the
    /// campaign's `delta` feature says.
    #[param(pattern = "^[01]$")]
    delta: Option<String>,
    /// The last `seq` the client saw: resume from there (an unsigned 64-bit integer).
    #[param(value_type = Option<u64>, format = "uint64")]
    since: Option<String>,
    /// The `epoch` of the welcome in which it saw it, as the welcome gave it (1–64 ASCII
    /// characters); only with `since`.
    #[param(min_length = 1, max_length = 64, pattern = "^[\\x00-\\x7f]*$")]
    epoch: Option<String>,
    /// An access token (browsers cannot set headers on a WebSocket); `Authorization: Bearer`
    /// works too.
    token: Option<String>,
}

/// Longest accepted `epoch`.
const MAX_EPOCH: usize = 64;

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the fresh tokens sessions present in `refresh` frames, with the user service. (The
/// user service, not the whole provider: the provider holds the node, and the node holds this.)
pub struct SessionTokens(pub services::user::UserService);

impl engine::TokenVerifier for SessionTokens {
    fn verify(&self, token: &str) -> Result<engine::Principal, String> {
        let (caller, t) = self
            .0
            .authenticate_session(token)
            .map_err(|e| e.to_string())?;
        principal(&caller, t).ok_or_else(|| "not a user's token".to_owned())
    }
}

/// What a session keeps of the token it was opened with (`None` for a caller that is not a
/// user): by it the node closes the session when the account's tokens are revoked or expire.
pub fn principal(
    caller: &services::security::Caller,
    token: services::user::SessionToken,
) -> Option<engine::Principal> {
    caller.user_id().map(|user| engine::Principal {
        user: user.to_owned(),
        generation: token.generation,
        expires_at_ms: token.expires_at_ms,
    })
}

/// After the WebSocket closing handshake: ends the node's side of the TCP connection (FIN)
/// and reads, discarding it, what the client still sends until it closes its side (at most
/// `timeout`). Closing the socket with unread input would make the kernel answer with a reset,
/// which can destroy the close frame in flight to the client: a client still sending when the
/// node closes it (a message over the size limit, an abusive one) would then see an abrupt
/// end instead of the close code.
async fn linger<Io>(io: &mut Io, timeout: std::time::Duration)
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tokio::time::timeout(timeout, async {
        io.shutdown().await?;
        let mut buf = vec![0u8; 4096];
        while io.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Refuses (403) an upgrade from a web page whose origin is neither the node's own nor in
/// `allowed_origins`; requests without `Origin` (non-browser clients) pass.
fn check_origin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match origin.to_str() {
        Ok(o) if app.origins.allows(o, host) => Ok(()),
        _ => {
            let shown = String::from_utf8_lossy(origin.as_bytes());
            tracing::info!(origin = %shown, "WebSocket upgrade from an origin not allowed");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("origin {shown:?} may not open WebSockets here: add it to allowed_origins"),
            ))
        }
    }
}

/// Whether a session may start without a token: only when WebSocket auth is off (`--dev`,
/// `auth = false`) and the path names the user. Otherwise a session without a token in the
/// request waits for an `auth` frame.
fn anonymous_allowed(app: &AppState, user: Option<&str>) -> bool {
    user.is_some() && !app.config.ws_auth()
}

/// Checks who may watch with `token`: its subject must be the path's user (or becomes the
/// user, for `/ws/{campaign}`), unless its roles allow `watch` on `campaign` (managers,
/// admins). Returns the user and the token's account, generation and expiry, by which the
/// session is closed (4401) when the account's tokens are revoked or expire.
fn authorize(
    app: &AppState,
    token: &str,
    user: Option<String>,
) -> Result<(String, Option<engine::Principal>), ApiError> {
    let (caller, token) = app.services.users.authenticate_session(token)?;
    let subject = caller.user_id().map(str::to_owned);
    let user = match (user, &subject) {
        (Some(user), _) => user,
        (None, Some(subject)) => subject.clone(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "name the user: /ws/{campaign}/{user_id}",
            ));
        }
    };
    if subject.as_deref() == Some(user.as_str())
        || app.services.policies.allows(&caller, "campaign", "watch")
    {
        Ok((user, principal(&caller, token)))
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the token is not {user:?}'s, and its roles do not allow watching as another user"
            ),
        ))
    }
}

/// How long a session opened without a token has to send its `auth` frame.
pub const AUTH_FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (at most [`AUTH_FRAME_TIMEOUT`]) for the first data frame of a session opened without
/// a token, which must be `{"type":"auth","token":"..."}`; returns the token. Pings and pongs
/// before it are allowed. `Ok(None)`: the client closed or the connection failed.
async fn auth_frame<S>(ws: &mut S) -> Result<Option<String>, ApiError>
where
    S: futures_util::Stream<
            Item = Result<engine::tungstenite::Message, engine::tungstenite::Error>,
        > + Unpin,
{
    use engine::tungstenite::Message;
    use futures_util::StreamExt as _;
    #[derive(Deserialize)]
    struct Auth {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        token: Option<String>,
    }
    let unauthenticated = |message: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            message.to_owned(),
        )
    };
    let first = tokio::time::timeout(AUTH_FRAME_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    let text = match first {
        Err(_) => {
            return Err(unauthenticated(
                "no token: send {\"type\":\"auth\",\"token\":...} within 5 s, or connect with ?token=",
            ));
        }
        Ok(None) | Ok(Some(Message::Close(_))) => return Ok(None),
        Ok(Some(Message::Text(text))) => text,
        Ok(Some(_)) => {
            return Err(ApiError::bad_request(
                "the first frame must be a text frame {\"type\":\"auth\",\"token\":...}",
            ));
        }
    };
    match serde_json::from_str::<Auth>(text.as_str()) {
        Ok(a) if a.kind == "auth" => match a.token.filter(|t| !t.is_empty()) {
            Some(token) => Ok(Some(token)),
            None => Err(unauthenticated("the auth frame has no \"token\"")),
        },
        Ok(_) => Err(unauthenticated(
            "no token: the first frame must be {\"type\":\"auth\",\"token\":...}",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the first frame is not an auth frame: {e}"
        ))),
    }
}

/// Opens a campaign's live stream: a WebSocket (`Connection: Upgrade`, `Upgrade: websocket`,
/// `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`) carrying a welcome frame, then tick frames.
/// The campaign may be named by id or slug. With WebSocket auth on, a token is needed (query
/// `token` or `Authorization: Bearer`) whose subject is the path's user, unless its roles allow
/// `watch` on `campaign`. A well-formed upgrade that is refused is accepted and then closed,
/// so that browsers can tell why: 4400 bad request (user id, `since`, `epoch`, `compress`), 4401
/// unauthenticated (no, bad, expired or revoked token), 4403 forbidden (another user's token,
/// or a page from an origin not allowed), 4404 unknown or not active campaign, 1013 database
/// unavailable (try again later), with the reason in the close frame.
#[utoipa::path(
    get,
    path = "/ws/{campaign_id}/{user_id}",
    operation_id = "watch_campaign",
    tag = "websocket",
    params(
        ("campaign_id" = String, Path, description = "Campaign id or slug"),
        ("user_id" = String, Path, description = "The watching user: 1-128 characters, no spaces or control characters"),
        WsQuery,
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the connection is now a WebSocket (a refused one is then closed with 4400/4401/4403/4404)"),
        (status = 400, description = "Bad WebSocket handshake header (Sec-WebSocket-Version, Sec-WebSocket-Key)", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade request (or not HTTP/1.1)", body = ErrorBody),
    )
)]
pub async fn upgrade(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<WsQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let user = path.map(|Path((campaign, user))| (campaign, Some(user)));
    accept(app, user, query, req).await
}

/// As `/ws/{campaign_id}/{user_id}`, watching as the token's subject (a token is required).
#[utoipa::path(
    get,
    path = "/ws/{campaign_id}",
    operation_id = "watch_campaign_as_token_subject",
    tag = "websocket",
    params(
        ("campaign_id" = String, Path, description = "Campaign id or slug"),
        WsQuery,
    ),
    // The token may come in the query (browsers), where OpenAPI cannot say it is required;
    // without one the upgrade is accepted and closed with 4401.
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the connection is now a WebSocket (a refused one is then closed with 4400/4401/4403/4404)"),
        (status = 400, description = "Bad WebSocket handshake header (Sec-WebSocket-Version, Sec-WebSocket-Key)", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade request (or not HTTP/1.1)", body = ErrorBody),
    )
)]
pub async fn upgrade_as_subject(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WsQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    accept(app, path.map(|Path(campaign)| (campaign, None)), query, req).await
}

/// What a session needs once the upgrade is done.
struct Admit {
    campaign: String,
    user: String,
    principal: Option<engine::Principal>,
    encoding: engine::Encoding,
    resume: Option<Resume>,
}

/// A well-formed upgrade with checked parameters, before it is known who watches.
struct Pending {
    campaign: String,
    user: Option<String>,
    encoding: engine::Encoding,
    resume: Option<Resume>,
}

/// What is decided before the upgrade: the session, or a wait for its `auth` frame (no token
/// in the request, and anonymous viewers not allowed), with what checking it needs.
enum Admission {
    Ready(Admit),
    // Boxed: the admission lives in every session's task until the session starts.
    AwaitAuth(Pending, Box<AppState>),
}

impl Pending {
    /// Authorizes `token` (or, with `None`, an anonymous viewer) and looks the campaign up.
    async fn admit(self, app: &AppState, token: Option<&str>) -> Result<Admit, ApiError> {
        let (user, principal) = match (token, self.user) {
            (Some(token), user) => authorize(app, token, user)?,
            (None, Some(user)) => (user, None),
            (None, None) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "/ws/{campaign} watches as the token's subject: send a token",
                ));
            }
        };
        Ok(Admit {
            campaign: live_campaign(app, self.campaign).await?,
            user,
            principal,
            encoding: self.encoding,
            resume: self.resume,
        })
    }
}

/// Answers the handshake: plain HTTP errors for what is not a WebSocket upgrade, `101` for the
/// rest, and then either the session or, for a refused one, a close frame with its code.
async fn accept(
    app: AppState,
    path: Result<(String, Option<String>), PathRejection>,
    query: Result<Query<WsQuery>, QueryRejection>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let accept_key = handshake(&req)?;
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this connection cannot be upgraded (HTTP/1.1 is required)",
        ));
    };
    let admission = match (path, query) {
        (Err(e), _) => Err(ApiError::from(e)),
        (_, Err(e)) => Err(ApiError::from(e)),
        (Ok((campaign, user)), Ok(Query(query))) => {
            admit(&app, campaign, user, query, req.headers()).await
        }
    };
    if let Err(e) = &admission {
        tracing::debug!(status = %e.status, code = e.code, message = %e.message, "WebSocket upgrade refused");
    }
    let cfg = &app.config;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(cfg.ws_read_buffer_size)
        .write_buffer_size(cfg.ws_write_buffer_size)
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.max_message_size));
    // The connection's place under `max_connections` stays taken while the session lives.
    let place = req.extensions_mut().remove::<Admitted>();
    let node = app.node.clone();
    let close_timeout = cfg.close_timeout;
    app.node.spawn_tracked(async move {
        let _place = place;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        // Boxed: the stream is moved through several futures, which would each keep room
        // for a copy of it in every connection's task.
        let mut ws = Box::new(
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config))
                .await,
        );
        let admit = match admission {
            Ok(Admission::Ready(a)) => Ok(a),
            Ok(Admission::AwaitAuth(pending, app)) => match auth_frame(&mut *ws).await {
                Ok(Some(token)) => pending.admit(&app, Some(&token)).await,
                Ok(None) => return,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match admit {
            Ok(a) => {
                node.serve_session(
                    &a.campaign,
                    &a.user,
                    a.principal,
                    a.encoding,
                    a.resume,
                    &mut *ws,
                )
                .await;
            }
            Err(e) => Box::pin(refuse(&mut *ws, &e, close_timeout)).await,
        }
        // Boxed: its buffer exists only while a connection is being closed.
        Box::pin(linger(ws.get_mut(), close_timeout)).await;
    });

    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key)
            .map_err(|_| ApiError::bad_request("bad Sec-WebSocket-Key"))?,
    );
    Ok(res)
}

/// The WebSocket handshake's own checks (answered in HTTP: without them there is no
/// WebSocket to close); returns the `Sec-WebSocket-Accept` value.
fn handshake(req: &Request) -> Result<String, ApiError> {
    let headers = req.headers();
    if req.method() != Method::GET
        || !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::bad_request("Sec-WebSocket-Key is missing"));
    };
    Ok(derive_accept_key(key.as_bytes()))
}

/// Checks everything about a well-formed upgrade: its parameters, origin, token and campaign.
async fn admit(
    app: &AppState,
    campaign: String,
    user: Option<String>,
    query: WsQuery,
    headers: &HeaderMap,
) -> Result<Admission, ApiError> {
    if let Some(user) = &user {
        check_user_id(user)?;
    }
    let compress = match query.compress.as_deref() {
        None | Some("") | Some("none") => false,
        Some("deflate") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "compress={other:?}: the only supported value is \"deflate\""
            )));
        }
    };
    let delta = match query.delta.as_deref() {
        None | Some("") => None,
        Some("1") => Some(true),
        Some("0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "delta={other:?}: expected 1 (merge patches) or 0 (whole states)"
            )));
        }
    };
    let resume = match (query.since.as_deref(), query.epoch) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::bad_request("epoch is only meaningful with since"));
        }
        (Some(since), epoch) => {
            let since = since.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "since={since:?}: expected the last seq seen (a whole number)"
                ))
            })?;
            if epoch
                .as_ref()
                .is_some_and(|e| e.is_empty() || e.len() > MAX_EPOCH)
            {
                return Err(ApiError::bad_request(format!(
                    "epoch must have 1-{MAX_EPOCH} characters"
                )));
            }
            Some(Resume { since, epoch })
        }
    };
    check_origin(app, headers)?;
    let header_token = super::auth::bearer(headers)?;
    let token = query
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .or(header_token);
    let anonymous = token.is_none() && anonymous_allowed(app, user.as_deref());
    let pending = Pending {
        campaign,
        user,
        encoding: engine::Encoding { compress, delta },
        resume,
    };
    if token.is_none() && !anonymous {
        return Ok(Admission::AwaitAuth(pending, Box::new(app.clone())));
    }
    pending.admit(app, token).await.map(Admission::Ready)
}

/// The id of the live campaign that `campaign` (an id or a slug) names; 404 for an unknown or
/// not active one.
async fn live_campaign(app: &AppState, campaign: String) -> Result<String, ApiError> {
    if app.node.has_campaign(&campaign) {
        return Ok(campaign);
    }
    match app.services.campaigns.cached(&campaign).await {
        Ok(c) if app.node.has_campaign(&c.id) => Ok(c.id),
        Ok(c) => Err(ApiError::not_found(format!(
            "campaign {:?} is {}, not live",
            campaign,
            c.status.as_str()
        ))),
        Err(services::ServiceError::NotFound { .. }) => Err(ApiError::not_found(format!(
            "campaign {campaign:?} not found"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The close code of a refused upgrade.
fn close_code_of(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 | 413 | 414 | 422 => 4400,
        401 => 4401,
        403 => 4403,
        404 => 4404,
        503 => 1013,
        _ => 1011,
    }
}

/// Sends the close frame of a refused upgrade and waits (bounded) for the client's.
async fn refuse<S>(ws: &mut S, e: &ApiError, timeout: std::time::Duration)
where
    S: futures_util::Sink<engine::tungstenite::Message, Error = engine::tungstenite::Error>
        + futures_util::Stream<
            Item = Result<engine::tungstenite::Message, engine::tungstenite::Error>,
        > + Unpin,
{
    use engine::tungstenite::Message;
    use engine::tungstenite::protocol::CloseFrame;
    use futures_util::{SinkExt as _, StreamExt as _};
    // A close reason is at most 123 bytes.
    let mut cut = e.message.len().min(123);
    while !e.message.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &e.message[..cut];
    let frame = CloseFrame {
        code: close_code_of(e.status).into(),
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(timeout, async {
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
        Ok::<(), engine::tungstenite::Error>(())
    })
    .await;
}
