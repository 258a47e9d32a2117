//! The schema's shape (each field's type and arguments, read from the SDL), and the two
//! GraphQL rules async-graphql 7 does not enforce that need it:
//!
//! - **Null propagation** (spec, "Handling Field Errors"): a field error makes its field
//!   null, and when the field is non-null the null moves up to the nearest nullable parent
//!   (all of `data` when there is none). Since 7.1 (#1746, "don't bail early on first error
//!   when resolving containers") async-graphql records a failed field's error and *drops the
//!   field* from its object, whatever its type: a `String!` went missing from its object, an
//!   object whose only field failed became `null` inside a `[Conversation!]!`. No resolver or
//!   wrapper of ours can see that; [`propagate_nulls`] applies the rule to the response, by
//!   each error's path.
//! - **`Int` literals are 32-bit** (spec, "Int" input coercion): async-graphql's validation
//!   accepts any 64-bit integer for `Int` and leaves the range check to the resolver, so an
//!   out-of-range literal on a field that never runs passed. [`check_int_ranges`] refuses
//!   it (and an out-of-range variable) before execution.

use std::collections::HashMap;
use std::sync::OnceLock;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
    Selection, SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::parser::{Pos, Positioned};
use async_graphql::{ErrorExtensionValues, Name, PathSegment, Response, ServerError, Value};

use crate::error::code;

/// A field's type and its arguments' types.
struct FieldShape {
    ty: Type,
    args: HashMap<String, Type>,
}

/// The schema's types, as far as these rules (and the price in [`super::cost`]) need them.
pub(crate) struct Shape {
    /// Object and interface types: their fields.
    outputs: HashMap<String, HashMap<String, FieldShape>>,
    /// Input object types: their fields' types.
    inputs: HashMap<String, HashMap<String, Type>>,
    query: String,
    mutation: String,
    subscription: String,
}

/// parley's schema shape, read once from its SDL.
static SHAPE: OnceLock<Shape> = OnceLock::new();

/// parley's schema shape, read from `sdl` the first time (every schema the server builds
/// has the same types).
pub(crate) fn parley(sdl: impl FnOnce() -> String) -> &'static Shape {
    SHAPE.get_or_init(|| Shape::from_sdl(&sdl()))
}

impl Shape {
    fn from_sdl(sdl: &str) -> Shape {
        let mut shape = Shape {
            outputs: HashMap::new(),
            inputs: HashMap::new(),
            query: "Query".to_owned(),
            mutation: "Mutation".to_owned(),
            subscription: "Subscription".to_owned(),
        };
        // The SDL is generated from our own types; a parse failure would be a bug in
        // async-graphql's SDL export, and leaves the rules without types (no-ops).
        let Ok(doc) = async_graphql::parser::parse_schema(sdl) else {
            return shape;
        };
        for def in doc.definitions {
            match def {
                TypeSystemDefinition::Schema(s) => {
                    if let Some(q) = &s.node.query {
                        shape.query = q.node.to_string();
                    }
                    if let Some(m) = &s.node.mutation {
                        shape.mutation = m.node.to_string();
                    }
                    if let Some(m) = &s.node.subscription {
                        shape.subscription = m.node.to_string();
                    }
                }
                TypeSystemDefinition::Type(t) => {
                    let name = t.node.name.node.to_string();
                    let fields = match t.node.kind {
                        TypeKind::Object(o) => o.fields,
                        TypeKind::Interface(i) => i.fields,
                        TypeKind::InputObject(i) => {
                            let fields = i
                                .fields
                                .into_iter()
                                .map(|f| (f.node.name.node.to_string(), f.node.ty.node));
                            shape.inputs.insert(name, fields.collect());
                            continue;
                        }
                        _ => continue,
                    };
                    let fields = fields.into_iter().map(|f| {
                        let args = f
                            .node
                            .arguments
                            .into_iter()
                            .map(|a| (a.node.name.node.to_string(), a.node.ty.node));
                        (
                            f.node.name.node.to_string(),
                            FieldShape {
                                ty: f.node.ty.node,
                                args: args.collect(),
                            },
                        )
                    });
                    shape.outputs.insert(name, fields.collect());
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        shape
    }

    fn root(&self, op: &OperationDefinition) -> Option<&str> {
        match op.ty {
            OperationType::Query => Some(&self.query),
            OperationType::Mutation => Some(&self.mutation),
            OperationType::Subscription => Some(&self.subscription),
        }
    }

    fn field(&self, parent: &str, name: &str) -> Option<&FieldShape> {
        self.outputs.get(parent)?.get(name)
    }

    /// The root type of `ty`'s operations.
    pub(crate) fn root_of(&self, ty: OperationType) -> &str {
        match ty {
            OperationType::Query => &self.query,
            OperationType::Mutation => &self.mutation,
            OperationType::Subscription => &self.subscription,
        }
    }

    /// The named type field `name` of `parent` returns, and whether a list wraps it.
    pub(crate) fn returns(&self, parent: &str, name: &str) -> Option<(&str, bool)> {
        fn named(ty: &Type) -> &str {
            match &ty.base {
                BaseType::Named(n) => n.as_str(),
                BaseType::List(inner) => named(inner),
            }
        }
        let ty = &self.field(parent, name)?.ty;
        Some((named(ty), matches!(ty.base, BaseType::List(_))))
    }
}

/// The operation of `doc` that runs for `operation_name`.
fn operation<'a>(
    doc: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        _ => None,
    }
}

/// The fields of `set` (through fragments) whose response key is `key`, each with the type
/// condition it was selected under, if any.
fn fields_with_key<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    key: &str,
    condition: Option<&'a str>,
    depth: usize,
    out: &mut Vec<(&'a async_graphql::parser::types::Field, Option<&'a str>)>,
) {
    // Fragment cycles are refused by validation; the depth bound is a second guard.
    if depth > 64 {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) if f.node.response_key().node.as_str() == key => {
                out.push((&f.node, condition));
            }
            Selection::Field(_) => {}
            Selection::InlineFragment(i) => {
                let cond = i
                    .node
                    .type_condition
                    .as_ref()
                    .map(|c| c.node.on.node.as_str())
                    .or(condition);
                fields_with_key(doc, &i.node.selection_set.node, key, cond, depth + 1, out);
            }
            Selection::FragmentSpread(s) => {
                if let Some(frag) = doc.fragments.get(&s.node.fragment_name.node) {
                    let cond = Some(frag.node.type_condition.node.on.node.as_str());
                    fields_with_key(
                        doc,
                        &frag.node.selection_set.node,
                        key,
                        cond,
                        depth + 1,
                        out,
                    );
                }
            }
        }
    }
}

/// For each prefix of `path` (lengths 1..=len), whether the response position it names is
/// non-null; `None` when the path does not follow the document (introspection, a bug).
fn non_null_along(
    shape: &Shape,
    doc: &ExecutableDocument,
    op: &OperationDefinition,
    path: &[PathSegment],
) -> Option<Vec<bool>> {
    let mut sets: Vec<&SelectionSet> = vec![&op.selection_set.node];
    let mut current: Option<Type> = None;
    let mut out = Vec::with_capacity(path.len());
    for segment in path {
        let ty = match segment {
            PathSegment::Field(key) => {
                let parent = match &current {
                    None => shape.root(op)?.to_owned(),
                    Some(Type {
                        base: BaseType::Named(n),
                        ..
                    }) => n.to_string(),
                    Some(_) => return None,
                };
                let mut found = Vec::new();
                for set in &sets {
                    fields_with_key(doc, set, key, None, 0, &mut found);
                }
                let (first, _) = found.first()?;
                let name = first.name.node.as_str();
                let ty = if name == "__typename" {
                    Type::new("String!")?
                } else {
                    // On the parent type, or (parent is an interface) on the type the
                    // fragment that selected it names.
                    shape
                        .field(&parent, name)
                        .or_else(|| {
                            found
                                .iter()
                                .find_map(|(_, cond)| shape.field((*cond)?, name))
                        })?
                        .ty
                        .clone()
                };
                sets = found.iter().map(|(f, _)| &f.selection_set.node).collect();
                ty
            }
            PathSegment::Index(_) => match current.take()?.base {
                BaseType::List(inner) => *inner,
                BaseType::Named(_) => return None,
            },
        };
        out.push(!ty.nullable);
        current = Some(ty);
    }
    Some(out)
}

/// Sets the position `path` of `data` to null, unless a parent of it is null already.
fn set_null(data: &mut Value, path: &[PathSegment]) {
    let Some((last, parents)) = path.split_last() else {
        *data = Value::Null;
        return;
    };
    let mut at = data;
    for segment in parents {
        let next = match (segment, at) {
            (PathSegment::Field(key), Value::Object(o)) => o.get_mut(key.as_str()),
            (PathSegment::Index(i), Value::List(l)) => l.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return,
        }
    }
    match (last, at) {
        (PathSegment::Field(key), Value::Object(o)) => {
            o.insert(Name::new(key), Value::Null);
        }
        (PathSegment::Index(i), Value::List(l)) => {
            if let Some(v) = l.get_mut(*i) {
                *v = Value::Null;
            }
        }
        _ => {}
    }
}

/// Applies null propagation to `response`, the answer to `query` (`operation_name`): each
/// field error's field becomes null, and a non-null one nulls its nearest nullable parent,
/// up to `data` itself. The errors are kept as they are, each with its path.
pub(crate) fn propagate_nulls(
    shape: &Shape,
    query: &str,
    operation_name: Option<&str>,
    response: &mut Response,
) {
    if response.errors.iter().all(|e| e.path.is_empty()) {
        return;
    }
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return;
    };
    let Some(op) = operation(&doc, operation_name) else {
        return;
    };
    for err in &response.errors {
        if err.path.is_empty() {
            continue;
        }
        let Some(non_null) = non_null_along(shape, &doc, op, &err.path) else {
            continue;
        };
        let mut len = err.path.len();
        while len > 0 && non_null[len - 1] {
            len -= 1;
        }
        set_null(&mut response.data, &err.path[..len]);
    }
}

/// The `BAD_USER_INPUT` error for an out-of-range `Int`.
fn out_of_range(field: &str, value: &Value, pos: Option<Pos>) -> ServerError {
    let mut err = ServerError::new(
        format!(
            "{field}: {value} is out of range for Int, a 32-bit integer ({}..={})",
            i32::MIN,
            i32::MAX
        ),
        pos,
    );
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code::BAD_USER_INPUT);
    ext.set("field", field);
    err.extensions = Some(ext);
    err
}

/// The first `Int` in `value` (of type `ty`) outside the 32-bit range.
fn bad_int<'a>(shape: &Shape, ty: &Type, value: &'a Value, depth: usize) -> Option<&'a Value> {
    if depth > 64 {
        return None;
    }
    match (&ty.base, value) {
        (BaseType::Named(n), Value::Number(num)) if n.as_str() == "Int" => {
            let ok = num.as_i64().is_some_and(|n| i32::try_from(n).is_ok());
            (!ok).then_some(value)
        }
        (BaseType::List(inner), Value::List(items)) => items
            .iter()
            .find_map(|v| bad_int(shape, inner, v, depth + 1)),
        // A single value where a list is expected is coerced into a list of one.
        (BaseType::List(inner), v) => bad_int(shape, inner, v, depth + 1),
        (BaseType::Named(n), Value::Object(fields)) => {
            let types = shape.inputs.get(n.as_str())?;
            fields
                .iter()
                .find_map(|(name, v)| bad_int(shape, types.get(name.as_str())?, v, depth + 1))
        }
        _ => None,
    }
}

/// Refuses an `Int` argument literal, or variable value, outside the 32-bit range (the
/// spec's `Int`), whether or not its field would run. Other input errors are left to
/// async-graphql's validation.
pub(crate) fn check_int_ranges(
    shape: &Shape,
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &async_graphql::Variables,
) -> Result<(), ServerError> {
    let Some(op) = operation(doc, operation_name) else {
        return Ok(());
    };
    for def in &op.variable_definitions {
        let name = &def.node.name.node;
        if let Some(value) = variables.get(name)
            && let Some(bad) = bad_int(shape, &def.node.var_type.node, value, 0)
        {
            return Err(out_of_range(&format!("${name}"), bad, Some(def.pos)));
        }
    }
    let Some(root) = shape.root(op) else {
        return Ok(());
    };
    check_set(shape, doc, root, &op.selection_set, 0)
}

fn check_set(
    shape: &Shape,
    doc: &ExecutableDocument,
    parent: &str,
    set: &Positioned<SelectionSet>,
    depth: usize,
) -> Result<(), ServerError> {
    if depth > 64 {
        return Ok(());
    }
    for item in &set.node.items {
        match &item.node {
            Selection::Field(f) => {
                let Some(field) = shape.field(parent, f.node.name.node.as_str()) else {
                    continue;
                };
                for (name, value) in &f.node.arguments {
                    let Some(ty) = field.args.get(name.node.as_str()) else {
                        continue;
                    };
                    // Variables are checked with their values above.
                    let Ok(value) = value.node.clone().into_const_with(|_| Err(())) else {
                        continue;
                    };
                    if let Some(bad) = bad_int(shape, ty, &value, 0) {
                        return Err(out_of_range(
                            name.node.as_str(),
                            bad,
                            Some(value_pos(f, name)),
                        ));
                    }
                }
                let mut inner = &field.ty;
                while let BaseType::List(t) = &inner.base {
                    inner = t;
                }
                if let BaseType::Named(n) = &inner.base {
                    check_set(shape, doc, n.as_str(), &f.node.selection_set, depth + 1)?;
                }
            }
            Selection::InlineFragment(i) => {
                let cond = i
                    .node
                    .type_condition
                    .as_ref()
                    .map_or(parent, |c| c.node.on.node.as_str());
                check_set(shape, doc, cond, &i.node.selection_set, depth + 1)?;
            }
            Selection::FragmentSpread(s) => {
                if let Some(frag) = doc.fragments.get(&s.node.fragment_name.node) {
                    let cond = frag.node.type_condition.node.on.node.as_str();
                    check_set(shape, doc, cond, &frag.node.selection_set, depth + 1)?;
                }
            }
        }
    }
    Ok(())
}

/// Where the argument `name` of `field` is written.
fn value_pos(
    field: &Positioned<async_graphql::parser::types::Field>,
    name: &Positioned<Name>,
) -> Pos {
    field
        .node
        .arguments
        .iter()
        .find(|(n, _)| n.node == name.node)
        .map_or(name.pos, |(_, v)| v.pos)
}
