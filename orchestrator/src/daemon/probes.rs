//! The standby's probes for the failover decision (`cluster::failover`): the site's
//! health URLs asked **at the address the site's records hold now** (the name stays in
//! the Host header and TLS SNI: reqwest's `resolve`), and this node's own witnesses
//! ("am I online?"). Each is bounded in time; none follows a redirect.

use crate::config::Witness;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `url` answers (2xx or 3xx) at `addr`, with its own name as Host and SNI.
pub async fn health_at(url: &url::Url, addr: IpAddr, within: Duration) -> Result<u16, String> {
    let host = url
        .host_str()
        .ok_or_else(|| format!("{url} has no host"))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("{url} has no port"))?;
    let client = reqwest::Client::builder()
        .resolve(&host, SocketAddr::new(addr, port))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(within)
        .timeout(within)
        .build()
        .map_err(|e| e.to_string())?;
    let status = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("{url} at {addr}: {}", e.without_url()))?
        .status();
    if status.is_success() || status.is_redirection() {
        Ok(status.as_u16())
    } else {
        Err(format!("{url} at {addr} answered {status}"))
    }
}

/// Whether `w` answers within `within`: a TCP connection opens, or an HTTP server
/// answers at all (any status: the question is whether this node is online).
pub async fn witness(w: &Witness, within: Duration) -> bool {
    match w {
        Witness::Tcp { host, port } => {
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            matches!(tokio::time::timeout(within, connect).await, Ok(Ok(_)))
        }
        Witness::Http(url) => {
            let Ok(client) = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(within)
                .timeout(within)
                .build()
            else {
                return false;
            };
            client.get(url.clone()).send().await.is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-request-at-a-time HTTP server on loopback answering `status`; returns its
    /// port and the request heads it saw.
    async fn server(status: &'static str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for _ in 0..10 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn health_is_asked_at_the_given_address_under_the_sites_name() {
        let (port, mut seen) = server("200 OK").await;
        let url: url::Url = format!("http://www.example.org:{port}/health")
            .parse()
            .unwrap();
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(health_at(&url, loopback, PROBE_TIMEOUT).await, Ok(200));
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("GET /health HTTP/1.1"), "{head}");
        assert!(
            head.to_lowercase()
                .contains(&format!("host: www.example.org:{port}")),
            "{head}"
        );
        // A redirect is an answer, not followed; a 5xx is not healthy.
        let (moved, _s1) = server("301 Moved Permanently").await;
        let url: url::Url = format!("http://www.example.org:{moved}/").parse().unwrap();
        assert_eq!(health_at(&url, loopback, PROBE_TIMEOUT).await, Ok(301));
        let (broken, _s2) = server("503 Service Unavailable").await;
        let url: url::Url = format!("http://www.example.org:{broken}/").parse().unwrap();
        let e = health_at(&url, loopback, PROBE_TIMEOUT).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
        // Nothing listening: an error, within the bound.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url: url::Url = format!("http://www.example.org:{closed}/").parse().unwrap();
        assert!(health_at(&url, loopback, PROBE_TIMEOUT).await.is_err());
    }

    #[tokio::test]
    async fn a_witness_answers_or_not() {
        let (port, _seen) = server("200 OK").await;
        let up = Witness::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(witness(&up, PROBE_TIMEOUT).await);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let down = Witness::Tcp {
            host: "127.0.0.1".into(),
            port: closed,
        };
        assert!(!witness(&down, PROBE_TIMEOUT).await);
        // An HTTP witness answers whatever its status; a closed port does not.
        let (broken, _s) = server("503 Service Unavailable").await;
        let http = |port: u16| Witness::Http(format!("http://127.0.0.1:{port}/").parse().unwrap());
        assert!(witness(&http(broken), PROBE_TIMEOUT).await);
        assert!(!witness(&http(closed), PROBE_TIMEOUT).await);
    }
}
