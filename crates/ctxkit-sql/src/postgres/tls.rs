//! The TLS connector cancel requests go through.

use futures_util::future::BoxFuture;
use std::sync::{Arc, RwLock};
use tokio::net::TcpStream;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{CancelToken, NoTls};

use super::cancel::AwaitClose;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The stream a cancel request is written to: TCP to the server, whose
/// shutdown waits until the server has closed its side (it does so once the
/// cancel has been delivered to the backend). A TLS connector for cancel
/// requests is a `MakeTlsConnect<CancelStream>`.
///
/// ```
/// use ctxkit_sql::postgres::{set_cancel_tls, CancelStream};
/// use tokio_postgres::tls::MakeTlsConnect;
///
/// // `NoTls` (the default) can carry cancel requests, and so can the
/// // `MakeTlsConnector`s of postgres-native-tls and tokio-postgres-rustls,
/// // which wrap any stream.
/// fn carries_cancels<T: MakeTlsConnect<CancelStream>>(_: &T) {}
/// carries_cancels(&tokio_postgres::NoTls);
/// set_cancel_tls(tokio_postgres::NoTls);
/// ```
pub type CancelStream = AwaitClose<TcpStream>;

/// Sends one cancel request over a TLS connector of the caller's choice.
trait CancelConnector: Send + Sync {
    fn cancel<'a>(
        &'a self,
        token: &'a CancelToken,
        stream: CancelStream,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

impl<T> CancelConnector for T
where
    T: MakeTlsConnect<CancelStream> + Clone + Send + Sync + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    T::Error: Send,
    <T::TlsConnect as TlsConnect<CancelStream>>::Future: Send,
{
    fn cancel<'a>(
        &'a self,
        token: &'a CancelToken,
        stream: CancelStream,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        let mut make = self.clone();
        Box::pin(async move {
            let tls = make.make_tls_connect(hostname).map_err(Into::into)?;
            token.cancel_query_raw(stream, tls).await?;
            Ok(())
        })
    }
}

static CONNECTOR: RwLock<Option<Arc<dyn CancelConnector>>> = RwLock::new(None);

/// Sets the TLS connector cancel requests go through, for every client of
/// the process: use the connector the connections were made with (a
/// `postgres-native-tls` or `tokio-postgres-rustls` `MakeTlsConnector`).
/// The default is [`NoTls`]. The server's `sslmode` handling is
/// tokio-postgres's: with `sslmode=require` and `NoTls`, cancelling fails.
///
/// ```
/// ctxkit_sql::postgres::set_cancel_tls(tokio_postgres::NoTls);
/// ```
pub fn set_cancel_tls<T>(tls: T)
where
    T: MakeTlsConnect<CancelStream> + Clone + Send + Sync + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    T::Error: Send,
    <T::TlsConnect as TlsConnect<CancelStream>>::Future: Send,
{
    *CONNECTOR.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(tls));
}

/// Writes the cancel request for `token` over `stream` with the configured
/// connector, and returns once the server has closed the connection.
pub(super) async fn send(
    token: &CancelToken,
    stream: CancelStream,
    hostname: &str,
) -> Result<(), BoxError> {
    let configured = CONNECTOR.read().unwrap_or_else(|p| p.into_inner()).clone();
    match configured {
        Some(connector) => connector.cancel(token, stream, hostname).await,
        None => NoTls.cancel(token, stream, hostname).await,
    }
}
