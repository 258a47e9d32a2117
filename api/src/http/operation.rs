//! What the HTTP layer reads from an operation before async-graphql parses it: how many
//! tokens its text holds and how deeply it nests, whether it is a mutation, whether it only
//! introspects.

use async_graphql::Request;
use async_graphql::parser::types::OperationType;

/// Whether the operation selects only `__schema`, `__type` and `__typename` at its root,
/// and at least one `__schema` or `__type` (a document of `__typename` alone is data-shaped
/// and priced like any other).
pub(super) fn is_introspection_only(request: &Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    // A cheap look before parsing: `__type` as a whole name (not the start of `__typename`).
    let names_type = request.query.match_indices("__type").any(|(i, _)| {
        !matches!(
            request.query.as_bytes().get(i + 6),
            Some(b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9')
        )
    });
    if !request.query.contains("__schema") && !names_type {
        return false;
    }
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let op = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op,
            None => return false,
        },
        // A single named operation is stored as `Multiple` too.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => op,
            None => return false,
        },
        (DocumentOperations::Multiple(_), None) => return false,
    };
    let items = &op.node.selection_set.node.items;
    op.node.ty == OperationType::Query
        && items.iter().any(|s| match &s.node {
            Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
            _ => false,
        })
        && op
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|s| match &s.node {
                Selection::Field(f) => matches!(
                    f.node.name.node.as_str(),
                    "__schema" | "__type" | "__typename"
                ),
                _ => false,
            })
}

pub(super) fn is_mutation(request: &Request) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let selected = request.operation_name.as_deref();
    doc.operations.iter().any(|(name, op)| {
        op.node.ty == OperationType::Mutation
            && (selected.is_none() || name.map(|n| n.as_str()) == selected)
    })
}

/// The deepest nesting of `[`, `{` and `(` in a query, outside strings and comments.
/// async-graphql's parser recurses once per level, and a few thousand levels overflow its
/// stack and abort the process before any of its own limits apply; so this is checked on
/// the raw text first, in one linear pass that cannot itself overflow.
pub fn check_nesting(query: &str, max: usize) -> Result<(), usize> {
    let bytes = query.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i] == b'\\' && bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > max {
                    return Err(depth);
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Counts the query's lexical tokens (names, numbers, strings, punctuators; whitespace,
/// commas and comments are not tokens), stopping as soon as there are more than `max`:
/// `Err` with the count reached. Parsing and validating cost grows with the token count
/// (and validation's overlapping-fields rule faster than linearly), so a document is
/// refused on its count before anything parses it.
pub fn check_tokens(query: &str, max: usize) -> Result<(), usize> {
    let bytes = query.as_bytes();
    let (mut tokens, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b'_' | b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => {
                i += 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'_' | b'.' | b'+' | b'-' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > max {
            return Err(tokens);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_nesting, check_tokens};

    #[test]
    fn nesting_is_measured_outside_strings_and_comments() {
        assert_eq!(check_nesting("{ a { b } }", 2), Ok(()));
        assert_eq!(check_nesting("{ a { b { c } } }", 2), Err(3));
        assert_eq!(check_nesting(r#"{ a(x: "[[[[[[") }"#, 2), Ok(()));
        assert_eq!(check_nesting("{ a # [[[[[[\n }", 1), Ok(()));
        assert_eq!(
            check_nesting(r#"{ a(x: """ [[[[ \""" [[[ """) }"#, 2),
            Ok(())
        );
        assert_eq!(check_nesting(&"[".repeat(2000), 32), Err(33));
    }

    #[test]
    fn tokens_are_counted_outside_whitespace_commas_and_comments() {
        let exact = |q: &str, n: usize| {
            assert_eq!(check_tokens(q, n), Ok(()), "{q}");
            assert_eq!(check_tokens(q, n - 1), Err(n), "{q}");
        };
        exact("{ a }", 3);
        exact("{ a, b, c }", 5);
        exact("query Q($x: Int = -1) { a(x: $x) @skip(if: false) }", 26);
        exact("{ a(s: \"x y, z { } \\\" w\") }", 8);
        exact("{ a(s: \"\"\" many { words } \\\"\"\" \"\"\") }", 8);
        exact("{ ...F } # a comment { with } tokens\n", 4);
        exact("{ a(f: 1.5e10) }", 8);
        assert_eq!(check_tokens(&"{ __typename ".repeat(100), 150), Err(151));
    }
}
