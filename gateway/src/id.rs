//! Identifiers: the node id of this gateway process and the Engine.IO / Socket.IO ids it hands
//! out.
//!
//! Every id this node issues is `{node}.{random}`: the node id (lowercase letters and digits, no
//! `.`) then 16 URL-safe base64 characters (96 random bits). Anyone holding an id can therefore
//! tell which gateway owns it without asking the broker (docs/architecture.md, "Identity"), and
//! the ids stay opaque URL-safe strings for clients.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// Characters a node id may contain.
const NODE_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Length of a generated node id.
const NODE_ID_LEN: usize = 6;
/// Longest node id accepted from configuration.
pub const MAX_NODE_ID_LEN: usize = 32;

/// The id of one gateway process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(Arc<str>);

/// Why a configured node id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node id {0:?} must be 1 to 32 characters of a-z and 0-9")]
pub struct NodeIdError(pub String);

impl NodeId {
    /// A fresh random node id.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        let id: String = (0..NODE_ID_LEN)
            .map(|_| {
                let i = (rng.next_u32() as usize) % NODE_ID_ALPHABET.len();
                char::from(NODE_ID_ALPHABET[i])
            })
            .collect();
        Self(id.into())
    }

    /// A node id from configuration, validated.
    pub fn parse(s: &str) -> Result<Self, NodeIdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NODE_ID_LEN
            && s.bytes().all(|b| NODE_ID_ALPHABET.contains(&b));
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(NodeIdError(s.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new id owned by this node: `{node}.{96 random bits}`.
    pub fn new_id(&self) -> Arc<str> {
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let mut s = String::with_capacity(self.0.len() + 17);
        s.push_str(&self.0);
        s.push('.');
        URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
        s.into()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The node id part of an id issued by [`NodeId::new_id`], if it has one.
pub fn owner_of(id: &str) -> Option<&str> {
    id.split_once('.')
        .map(|(node, _)| node)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_node_and_96_bits() {
        let node = NodeId::parse("gw1").expect("valid");
        let a = node.new_id();
        let b = node.new_id();
        assert_ne!(a, b);
        assert_eq!(owner_of(&a), Some("gw1"));
        let rand_part = a.split_once('.').expect("has a dot").1;
        assert_eq!(rand_part.len(), 16);
        assert!(
            rand_part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn node_ids_are_validated() {
        for (input, ok) in [
            ("a", true),
            ("node42", true),
            ("", false),
            ("Node", false),
            ("a.b", false),
            ("a-b", false),
            (&"x".repeat(33), false),
        ] {
            assert_eq!(NodeId::parse(input).is_ok(), ok, "{input:?}");
        }
        let random = NodeId::random();
        assert!(NodeId::parse(random.as_str()).is_ok());
    }

    #[test]
    fn owner_needs_a_dot() {
        assert_eq!(owner_of("nodot"), None);
        assert_eq!(owner_of(".x"), None);
    }
}
