//! `host:port` endpoints that servers listen on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Why an endpoint cannot be listened on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint is empty; expected host:port, e.g. \"localhost:4317\" or \":4317\"")]
    Empty,
    #[error(
        "missing port in endpoint {0:?}; expected host:port, e.g. \"localhost:4317\" or \":4317\""
    )]
    MissingPort(String),
    #[error("invalid port {port:?} in endpoint {endpoint:?}: expected a number from 0 to 65535")]
    InvalidPort { endpoint: String, port: String },
    #[error("cannot resolve host {host:?} in endpoint {endpoint:?}: {reason}")]
    Unresolvable {
        endpoint: String,
        host: String,
        reason: String,
    },
}

/// Splits `host:port`, `[v6]:port` or `:port` into host (without brackets, maybe empty) and port.
pub fn split_host_port(endpoint: &str) -> Result<(&str, u16), EndpointError> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Err(EndpointError::Empty);
    }
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| EndpointError::MissingPort(endpoint.to_string()))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| EndpointError::MissingPort(endpoint.to_string()))?;
        (host, port)
    } else {
        endpoint
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::MissingPort(endpoint.to_string()))?
    };
    if port.is_empty() {
        return Err(EndpointError::MissingPort(endpoint.to_string()));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| EndpointError::InvalidPort {
            endpoint: endpoint.to_string(),
            port: port.to_string(),
        })?;
    Ok((host, port))
}

/// The socket address to bind for `endpoint`: `localhost:4317` is the IPv4 loopback,
/// `0.0.0.0:4317` and `:4317` all interfaces, `[::1]:4317` the IPv6 loopback; other host names
/// are looked up (preferring IPv4).
pub fn resolve_bind_address(endpoint: &str) -> Result<SocketAddr, EndpointError> {
    let (host, port) = split_host_port(endpoint)?;
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let unresolvable = |reason: String| EndpointError::Unresolvable {
        endpoint: endpoint.trim().to_string(),
        host: host.to_string(),
        reason,
    };
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| unresolvable(e.to_string()))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| unresolvable("no addresses found".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses() {
        let addr = |e: &str| resolve_bind_address(e).unwrap().to_string();
        assert_eq!(addr("localhost:4317"), "127.0.0.1:4317");
        assert_eq!(addr("0.0.0.0:4317"), "0.0.0.0:4317");
        assert_eq!(addr(":4317"), "0.0.0.0:4317");
        assert_eq!(addr("[::1]:4318"), "[::1]:4318");
        assert_eq!(addr("127.0.0.1:0"), "127.0.0.1:0");
    }

    #[test]
    fn bad_endpoints_explain_the_format() {
        let err = |e: &str| resolve_bind_address(e).unwrap_err().to_string();
        assert!(err("localhost").contains("missing port in endpoint \"localhost\""));
        assert!(err("localhost:").contains("missing port"));
        assert!(err("localhost:http").contains("invalid port \"http\""));
        assert!(err("localhost:70000").contains("from 0 to 65535"));
        assert!(err("").contains("endpoint is empty"));
        assert!(err("[::1]").contains("missing port"));
    }
}
