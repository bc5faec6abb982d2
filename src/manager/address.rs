//! Where a manager listens, in a form that travels inside proxies.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connection::Address;

/// A manager's address as proxies carry it (a [`connection::Address`](Address) that serde can
/// encode and sessions can be keyed by).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum ManagerAddress {
    Unix(PathBuf),
    Abstract(Vec<u8>),
    Tcp(SocketAddr),
}

impl ManagerAddress {
    pub(crate) fn to_address(&self) -> Address {
        match self {
            ManagerAddress::Unix(p) => Address::Unix(p.clone()),
            ManagerAddress::Abstract(n) => Address::Abstract(n.clone()),
            ManagerAddress::Tcp(a) => Address::Tcp(*a),
        }
    }

    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self, ManagerAddress::Tcp(_))
    }
}

impl From<&Address> for ManagerAddress {
    fn from(a: &Address) -> ManagerAddress {
        match a {
            Address::Unix(p) => ManagerAddress::Unix(p.clone()),
            Address::Abstract(n) => ManagerAddress::Abstract(n.clone()),
            Address::Tcp(a) => ManagerAddress::Tcp(*a),
        }
    }
}

/// As the address is written (`@name`, a path, `host:port`), not as bytes.
impl fmt::Debug for ManagerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl fmt::Display for ManagerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_address().fmt(f)
    }
}
