//! Opaque global ids: `base64url("Conversation:42")`. The same ids serve GraphQL (`node`)
//! and REST.

use async_graphql::ID;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The types a global id can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    /// A conversation.
    Conversation,
    /// A message.
    Message,
}

impl NodeType {
    fn name(self) -> &'static str {
        match self {
            NodeType::Conversation => "Conversation",
            NodeType::Message => "Message",
        }
    }
}

/// The global id of a row.
pub fn encode_id(ty: NodeType, id: i64) -> ID {
    ID(service::cursor::encode_numbers(ty.name(), &[id], ""))
}

/// Decodes any global id; `None` when it is not one this server issued.
pub fn decode_any(id: &str) -> Option<(NodeType, i64)> {
    if id.len() > 64 {
        return None;
    }
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
    let (ty, n) = raw.split_once(':')?;
    let ty = match ty {
        "Conversation" => NodeType::Conversation,
        "Message" => NodeType::Message,
        _ => return None,
    };
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    Some((ty, n))
}

/// Decodes a global id of type `ty`; `None` when it is malformed or of another type.
pub fn decode_id(ty: NodeType, id: &str) -> Option<i64> {
    decode_any(id).filter(|(t, _)| *t == ty).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_type() {
        let id = encode_id(NodeType::Conversation, 42);
        assert_eq!(decode_id(NodeType::Conversation, &id), Some(42));
        assert_eq!(decode_id(NodeType::Message, &id), None);
    }

    #[test]
    fn malformed_ids_decode_to_none() {
        for id in [
            "",
            "42",
            "!!",
            "Q29udmVyc2F0aW9uOi0x",
            "Q29udmVyc2F0aW9uOng",
        ] {
            assert_eq!(decode_any(id), None, "{id}");
        }
    }
}
