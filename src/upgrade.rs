//! WebSockets off actix's HTTP/1 dispatcher. actix-http keeps an 8 KB read and an 8 KB write
//! buffer for the whole life of every connection it serves, an upgraded one included; a relay
//! holding tens of thousands of waiting browsers pays that for each. So a request that asks to
//! upgrade its connection is handed here instead: it goes through the same app (routes,
//! middleware, checks) as any request; if the handler accepted it ([`accept`]), the 101 is
//! written and the bare TCP stream becomes a `tokio-tungstenite` socket with small buffers,
//! driven by what the handler left on the response. Any other answer is written as it is and
//! the connection closes.
//!
//! The socket is then served by a task of its own and the connection's future ends, so nothing
//! of actix's connection state stays with a waiting browser. The server no longer counts such
//! a socket among its connections: [`OpenSockets`] does, so a stop can wait for them, and the
//! relay's own cap (`max_open_sockets`) bounds them.

use actix_codec::Framed;
use actix_http::body::{BodySize, MessageBody};
use actix_http::{ConnectionType, Request, Response, StatusCode, h1};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, fn_factory, fn_service};
use actix_web::dev::{AppConfig, ServiceResponse};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::SinkExt;
use futures_util::future::LocalBoxFuture;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// An accepted WebSocket, after its handshake.
pub type Socket = WebSocketStream<TcpStream>;

/// The largest message or frame a browser may send: every one we expect is a small JSON object.
const MAX_MESSAGE: usize = 4 * 1024;
/// What a socket reads into at a time; a longer frame grows it for as long as it is read.
const READ_BUFFER: usize = 256;

/// What to do with the socket once the 101 is written: left by a handler on its response.
struct OnUpgrade(Box<dyn FnOnce(Socket) -> LocalBoxFuture<'static, ()>>);

/// Accepts a WebSocket handshake: the 101 answer, which hands the upgraded socket to `serve`.
/// A request that is not a valid handshake gets `Err` (for the handler to answer 400).
pub fn accept<F, Fut>(req: &HttpRequest, serve: F) -> Result<HttpResponse, actix_http::ws::HandshakeError>
where
    F: FnOnce(Socket) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut response =
        HttpResponse::from(actix_http::ws::handshake(req.head())?.finish()).map_into_boxed_body();
    let serve = OnUpgrade(Box::new(move |socket| Box::pin(serve(socket))));
    response.extensions_mut().insert(serve);
    Ok(response)
}

/// The upgraded sockets being served, counted so a stop can wait until every one has closed.
#[derive(Default)]
pub struct OpenSockets {
    open: AtomicUsize,
    all_closed: Notify,
}

/// One socket being served, counted until dropped.
struct Counted(Arc<OpenSockets>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

impl OpenSockets {
    fn count(self: &Arc<Self>) -> Counted {
        self.open.fetch_add(1, Ordering::AcqRel);
        Counted(self.clone())
    }

    /// Resolves once no upgraded socket is open (at once if none is).
    pub async fn all_closed(&self) {
        loop {
            // Made before the check, so a close in between still wakes it.
            let closed = self.all_closed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every frame is written when sent: pushes are rare and must not wait.
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// The upgrade service for `HttpServiceBuilder::upgrade`: each worker builds its own instance of
/// the app (as it does for ordinary requests) to route upgrade requests through.
pub fn service<F, I, S, B>(
    app: F,
    sockets: Arc<OpenSockets>,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    F: Fn() -> I + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig, Response = ServiceResponse<B>, Error = actix_web::Error>
        + 'static,
    S::Service: 'static,
    S::InitError: std::fmt::Debug,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let app = app().into_factory();
        let sockets = sockets.clone();
        async move {
            let app = app
                .new_service(AppConfig::default())
                .await
                .map_err(|e| tracing::error!(error = ?e, "cannot build the app for upgrades"))?;
            let app = Rc::new(app);
            Ok(fn_service(move |(req, framed)| {
                serve(app.clone(), sockets.clone(), req, framed)
            }))
        }
    })
}

async fn serve<S, B>(
    app: Rc<S>,
    sockets: Arc<OpenSockets>,
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let mut response: Response<_> = match app.call(req).await {
        Ok(answer) => answer.into_parts().1.map_into_boxed_body().into(),
        Err(e) => e.error_response().into(),
    };
    let upgrade = response.extensions_mut().remove::<OnUpgrade>();
    let (mut head, body) = response.into_parts();
    match upgrade {
        Some(OnUpgrade(serve)) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            framed.send(h1::Message::Item((head, BodySize::None))).await?;
            // What the client sent after its request head is the socket's; the dispatcher's
            // buffers (8 KB each) go now, not when the socket ends.
            let (io, already_read) = {
                let parts = framed.into_parts();
                (parts.io, parts.read_buf.to_vec())
            };
            let socket =
                WebSocketStream::from_partially_read(io, already_read, Role::Server, Some(socket_config()))
                    .await;
            let counted = sockets.count();
            actix_web::rt::spawn(async move {
                serve(socket).await;
                drop(counted);
            });
        }
        _ => {
            // A refused handshake: the answer as any other, then the connection closes.
            head.head_mut().set_connection_type(ConnectionType::Close);
            let body = actix_http::body::to_bytes(body).await.unwrap_or_default();
            let size = BodySize::Sized(body.len() as u64);
            // Head and body leave in one write.
            framed.feed(h1::Message::Item((head, size))).await?;
            framed.feed(h1::Message::Chunk(Some(body))).await?;
            framed.send(h1::Message::Chunk(None)).await?;
        }
    }
    Ok(())
}
