//! Opening Redis: one server (`redis://host:port`, `rediss://…` for TLS) or a Redis Cluster
//! (`redis+cluster://host1:port,host2:port`, `rediss+cluster://…`; any user and password given
//! before the first host apply to every node). Either way the store gets one [`Link`] to send
//! commands on; a cluster's link also carries this instance's sharded subscriptions, whose
//! messages arrive on the [`Subscriber`].

use super::super::{STORE_TIMEOUT, StoreError};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, IntoConnectionInfo, Pipeline, PushInfo, RedisFuture, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// Where commands go: one server (reconnecting by itself) or a cluster (routing each command
/// to the node that holds its key's slot, following failovers).
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

/// How this instance hears events: one server's client opens its own subscription connection;
/// a cluster's messages (and disconnections) arrive on the receiver, pushed on the command
/// connections, which also carry the subscriptions.
pub enum Subscriber {
    Single(Arc<redis::Client>),
    Cluster(UnboundedReceiver<PushInfo>, ClusterConnection),
}

/// The nodes of a `redis+cluster://` or `rediss+cluster://` URL, each as a plain Redis URL;
/// `None` for a one-server URL.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let node_scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let (hosts, path) = match hosts.find(['/', '?']) {
        Some(at) => hosts.split_at(at),
        None => (hosts, ""),
    };
    Some(
        hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("{node_scheme}://{auth}{host}{path}"))
            .collect(),
    )
}

/// Every connection: TCP keepalive on, so a peer that vanished is noticed by the kernel too,
/// and no Nagle delay on small commands.
fn tcp_settings() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    TcpSettings::default().set_nodelay(true).set_keepalive(keepalive)
}

fn roots(ca_pem: Option<Vec<u8>>) -> Option<redis::TlsCertificates> {
    ca_pem.map(|root_cert| redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    })
}

/// Connects to `url`, failing now (with the reason, the password left out) if it cannot.
/// `ca_pem`: the roots a TLS server's certificate must chain to (the system's when `None`).
pub async fn open(url: &str, ca_pem: Option<Vec<u8>>) -> Result<(Link, Subscriber), StoreError> {
    match cluster_nodes(url) {
        Some(nodes) => {
            let (pushes, subscriber) = tokio::sync::mpsc::unbounded_channel();
            let conn = open_cluster(url, nodes, ca_pem, Some(pushes)).await?;
            Ok((Link::Cluster(conn.clone()), Subscriber::Cluster(subscriber, conn)))
        }
        None => {
            let client = Arc::new(server_client(url, ca_pem)?);
            let conn = open_server(url, &client).await?;
            Ok((Link::Single(conn), Subscriber::Single(client)))
        }
    }
}

/// Another link to the same Redis for commands only (no subscriptions ride on it): one per
/// actix worker, so a request's Redis calls are written and answered on its own thread.
pub async fn open_commands(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Link, StoreError> {
    match cluster_nodes(url) {
        Some(nodes) => Ok(Link::Cluster(open_cluster(url, nodes, ca_pem, None).await?)),
        None => Ok(Link::Single(
            open_server(url, &server_client(url, ca_pem)?).await?,
        )),
    }
}

fn bad_url(url: &str) -> impl Fn(redis::RedisError) -> StoreError {
    let shown = redact_url(url);
    move |e| StoreError(format!("bad redis url {shown}: {e}"))
}

/// A bounded connection attempt's outcome, its failure with the reason (password left out).
fn connected<T>(
    url: &str,
    attempt: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    let shown = redact_url(url);
    match attempt {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StoreError(format!("cannot connect to redis at {shown}: {e}"))),
        Err(_) => Err(StoreError(format!("redis at {shown} did not answer in time"))),
    }
}

/// `pushes`: where the cluster's pushed messages (sharded subscriptions) go, if anywhere.
async fn open_cluster(
    url: &str,
    nodes: Vec<String>,
    ca_pem: Option<Vec<u8>>,
    pushes: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
) -> Result<ClusterConnection, StoreError> {
    if nodes.is_empty() {
        return Err(StoreError(format!("bad redis url {}: no nodes", redact_url(url))));
    }
    let mut builder = ClusterClientBuilder::new(nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .tcp_settings(tcp_settings())
        .connection_timeout(STORE_TIMEOUT)
        .response_timeout(STORE_TIMEOUT)
        .retries(3);
    if let Some(pushes) = pushes {
        builder = builder.push_sender(pushes);
    }
    if let Some(certs) = roots(ca_pem) {
        builder = builder.certs(certs);
    }
    let client = builder.build().map_err(bad_url(url))?;
    connected(
        url,
        tokio::time::timeout(STORE_TIMEOUT * 2, client.get_async_connection()).await,
    )
}

fn server_client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<redis::Client, StoreError> {
    let info = url
        .into_connection_info()
        .map_err(bad_url(url))?
        .set_tcp_settings(tcp_settings());
    match roots(ca_pem) {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
    .map_err(bad_url(url))
}

async fn open_server(url: &str, client: &redis::Client) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(STORE_TIMEOUT))
        .set_response_timeout(Some(STORE_TIMEOUT))
        .set_number_of_retries(2);
    connected(
        url,
        tokio::time::timeout(STORE_TIMEOUT, client.get_connection_manager_with_config(config)).await,
    )
}

/// A Redis URL for messages: any password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://[redacted]{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_node_with_the_shared_password() {
        assert_eq!(
            cluster_nodes("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001/?protocol=3"),
            Some(vec![
                "redis://:pw@10.0.0.1:7000/?protocol=3".to_owned(),
                "redis://:pw@10.0.0.2:7001/?protocol=3".to_owned(),
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h1:1,h2:2"),
            Some(vec!["rediss://h1:1".to_owned(), "rediss://h2:2".to_owned()])
        );
        assert_eq!(cluster_nodes("redis://h1:1"), None);
        assert_eq!(cluster_nodes("redis+cluster://"), Some(vec![]));
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact_url("redis+cluster://u:secret@h1:1,h2:2"),
            "redis+cluster://[redacted]@h1:1,h2:2"
        );
    }
}
