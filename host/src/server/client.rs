//! The client's address: the peer of the connection, or, when that peer is a proxy the operator
//! trusts (`trusted_proxies`), the address that proxy reports in `X-Forwarded-For`. Used for
//! the audit log and for throttling; never for authorisation.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::AppState;

/// The client's address (unspecified when there is no connection, as in tests that drive the
/// router without a socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, &state.trusted_proxies)))
    }
}

/// The client address of a request; see the module documentation.
pub fn client_ip(parts: &Parts, trusted: &[IpNet]) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    forwarded_client(peer, &parts.headers, trusted)
}

/// Walks `X-Forwarded-For` from the right (the hop nearest us) past trusted proxies; the first
/// untrusted address is the client. Anything left of it was written by the client and is not
/// believed. A malformed entry stops the walk at the last address known to be good.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let trusts = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !trusts(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusts(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn net(s: &str) -> IpNet {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .or_else(|_| s.parse())
            .expect("net")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let trusted = [net("127.0.0.1"), net("10.0.0.2")];
        let headers = xff(&["203.0.113.9"]);
        // From an untrusted peer the header is the client's own claim: ignored.
        assert_eq!(
            forwarded_client(ip("198.51.100.4"), &headers, &trusted),
            ip("198.51.100.4")
        );
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_walk_skips_trusted_hops_and_ignores_what_the_client_prepended() {
        let trusted = [net("127.0.0.1"), net("10.0.0.0/24")];
        // client-forged, real client, inner proxy; across two header lines.
        let headers = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last good address.
        let headers = xff(&["203.0.113.9, not-an-ip, 10.0.0.2"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &headers, &trusted),
            ip("10.0.0.2")
        );
        let headers = xff(&["2001:db8::1"]);
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), &headers, &trusted),
            ip("2001:db8::1")
        );
        // A range trusts every address in it, and only those.
        let headers = xff(&["203.0.113.9, 10.0.0.77"]);
        assert_eq!(
            forwarded_client(ip("10.0.0.200"), &headers, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            forwarded_client(ip("10.0.1.1"), &headers, &trusted),
            ip("10.0.1.1"),
            "outside the range: the peer itself"
        );
    }
}
