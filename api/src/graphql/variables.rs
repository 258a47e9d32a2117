//! The part of async-graphql's validation that a request's variables can change, for
//! documents that passed validation before ([`super::cost::DocumentCache`]).
//!
//! Of the rules async-graphql 7 runs (`ValidationMode::Strict`), one reads the variables'
//! values: `ArgumentsOfCorrectType`, which substitutes them into each argument that uses
//! them and checks the result against the argument's type (`"Invalid value for argument
//! \"id\", expected type \"ID\""`). Every other rule, and the depth, reads the document and
//! the schema only (the complexity reads arguments too, but only for fields with a
//! `complexity` expression, and parley has none). So once a text has passed with some
//! variables, it passes with any other variables exactly when that rule does.
//!
//! [`VariableChecks::of`] lists, once per document, the arguments that rule would check
//! with variables (in the order it visits them), and [`VariableChecks::run`] checks them
//! against one request's values with the same test and the same message, position and
//! order of errors. The rule's test (`is_valid_input_value`) is private to async-graphql;
//! [`invalid_input`] is a line-by-line copy of it, over [`InputTypes`]: the input types of
//! the registry of the schema that validated the document, copied once (keeping the schema
//! itself would make a cycle through its data, which holds the cache).

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{
    Directive, ExecutableDocument, Field, OperationType, Selection, SelectionSet,
};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_graphql::registry::ScalarValidatorFn;
use async_graphql::{Name, QueryPathNode, QueryPathSegment, ServerError, Value, Variables};

/// What [`invalid_input`] reads of one named type of the registry.
enum InputType {
    Scalar {
        is_valid: Option<ScalarValidatorFn>,
    },
    Enum {
        name: String,
        values: HashSet<String>,
    },
    InputObject {
        name: String,
        oneof: bool,
        /// In the registry's order.
        fields: Vec<InputField>,
    },
    /// Object, interface, union: never an argument's type in a validated document.
    Other,
}

struct InputField {
    name: String,
    ty: String,
    has_default: bool,
}

/// The registry's types as [`invalid_input`] reads them.
pub(crate) struct InputTypes(BTreeMap<String, InputType>);

impl InputTypes {
    /// A copy of what `registry` says of its input types.
    pub(crate) fn of(registry: &Registry) -> InputTypes {
        let types = registry.types.iter().map(|(name, ty)| {
            let input = match ty {
                MetaType::Scalar { is_valid, .. } => InputType::Scalar {
                    is_valid: is_valid.clone(),
                },
                MetaType::Enum {
                    name, enum_values, ..
                } => InputType::Enum {
                    name: name.clone(),
                    values: enum_values.keys().cloned().collect(),
                },
                MetaType::InputObject {
                    name,
                    input_fields,
                    oneof,
                    ..
                } => InputType::InputObject {
                    name: name.clone(),
                    oneof: *oneof,
                    fields: input_fields
                        .values()
                        .map(|f| InputField {
                            name: f.name.clone(),
                            ty: f.ty.clone(),
                            has_default: f.default_value.is_some(),
                        })
                        .collect(),
                },
                _ => InputType::Other,
            };
            (name.clone(), input)
        });
        InputTypes(types.collect())
    }
}

/// One argument whose value uses variables.
struct Check {
    /// The argument's name, where validation reports it.
    name: Positioned<Name>,
    /// The argument's type, as the registry spells it (`ID!`, `[ID!]`).
    ty: String,
    /// The value as written, with `variables` substituted (`Err` when one has no value).
    value: Substitute,
}

/// An argument's value as written, and how it reads with a request's variables.
type Substitute = Box<dyn Fn(&Variables) -> Result<Value, ()> + Send + Sync>;

/// The arguments of one document (and one selected operation) whose values use variables,
/// and the schema that validated it.
pub(crate) struct VariableChecks {
    types: Arc<InputTypes>,
    checks: Vec<Check>,
}

impl VariableChecks {
    /// The checks of `document` when `operation_name` is selected, against `registry`
    /// (the one that validated it) and `types`, its input types.
    pub(crate) fn of(
        registry: &Registry,
        types: Arc<InputTypes>,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
    ) -> VariableChecks {
        let mut walk = Walk {
            registry,
            checks: Vec::new(),
        };
        // As async-graphql's visitor: fragment definitions first, then operations. The
        // rule substitutes variables in fragments always, and in an operation unless
        // another one is selected by name.
        for fragment in document.fragments.values() {
            let ty = walk
                .registry
                .types
                .get(fragment.node.type_condition.node.on.node.as_str());
            walk.directives(&fragment.node.directives);
            walk.set(ty, &fragment.node.selection_set.node);
        }
        for (name, operation) in document.operations.iter() {
            let unselected = operation_name
                .zip(name)
                .is_some_and(|(selected, this)| selected != this.as_str());
            if unselected {
                continue;
            }
            let registry = walk.registry;
            let root = match operation.node.ty {
                OperationType::Query => Some(registry.query_type.as_str()),
                OperationType::Mutation => registry.mutation_type.as_deref(),
                OperationType::Subscription => registry.subscription_type.as_deref(),
            };
            let Some(root) = root else { continue };
            walk.directives(&operation.node.directives);
            walk.set(registry.types.get(root), &operation.node.selection_set.node);
        }
        let checks = walk.checks;
        VariableChecks { types, checks }
    }

    /// Whether no argument uses a variable (nothing to check per request).
    pub(crate) fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The errors validation would report for `variables`: empty when they pass.
    pub(crate) fn run(&self, variables: &Variables) -> Vec<ServerError> {
        let mut errors = Vec::new();
        for check in &self.checks {
            let Ok(value) = (check.value)(variables) else {
                // A variable without a value is not checked here (execution reports it).
                continue;
            };
            let path = QueryPathNode {
                parent: None,
                segment: QueryPathSegment::Name(check.name.node.as_str()),
            };
            if let Some(reason) = invalid_input(&self.types, &check.ty, &value, path) {
                errors.push(ServerError::new(
                    format!("Invalid value for argument {reason}"),
                    Some(check.name.pos),
                ));
            }
        }
        errors
    }
}

/// Adds a check for each argument of `arguments` (a field's or a directive's, typed by
/// `args`) whose value uses variables. A macro, since the parser's value type (with
/// variables) is not exported by name.
macro_rules! variable_arguments {
    ($walk:expr, $args:expr, $arguments:expr) => {
        if let Some(args) = $args {
            for (name, value) in $arguments {
                let Some(arg) = args.get(name.node.as_str()) else {
                    continue;
                };
                if value.node.clone().into_const_with(|_| Err(())).is_err() {
                    let value = value.node.clone();
                    $walk.checks.push(Check {
                        name: name.clone(),
                        ty: arg.ty.clone(),
                        value: Box::new(move |variables: &Variables| {
                            value
                                .clone()
                                .into_const_with(|var| variables.get(&var).cloned().ok_or(()))
                        }),
                    });
                }
            }
        }
    };
}

/// The walk that lists the checks, following async-graphql's visitor (types as it tracks
/// them; fragment spreads are not followed, their definitions are visited on their own).
struct Walk<'a> {
    registry: &'a Registry,
    checks: Vec<Check>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, ty: Option<&'a MetaType>, set: &'a SelectionSet) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => self.field(ty, field),
                Selection::FragmentSpread(spread) => self.directives(&spread.node.directives),
                Selection::InlineFragment(inline) => {
                    let inner = match &inline.node.type_condition {
                        Some(cond) => self.registry.types.get(cond.node.on.node.as_str()),
                        None => ty,
                    };
                    self.directives(&inline.node.directives);
                    self.set(inner, &inline.node.selection_set.node);
                }
            }
        }
    }

    fn field(&mut self, parent: Option<&'a MetaType>, field: &'a Positioned<Field>) {
        let field = &field.node;
        if field.name.node == "__typename" {
            return;
        }
        let meta = parent.and_then(|ty| ty.field_by_name(&field.name.node));
        variable_arguments!(self, meta.map(|f| &f.args), &field.arguments);
        self.directives(&field.directives);
        let ty = meta.and_then(|f| self.registry.concrete_type_by_name(&f.ty));
        self.set(ty, &field.selection_set.node);
    }

    fn directives(&mut self, directives: &'a [Positioned<Directive>]) {
        for directive in directives {
            let args = self
                .registry
                .directives
                .get(directive.node.name.node.as_str())
                .map(|d| &d.args);
            variable_arguments!(self, args, &directive.node.arguments);
        }
    }
}

fn valid_error(path: &QueryPathNode, message: String) -> String {
    format!("\"{path}\", {message}")
}

/// async-graphql 7.2's `validation::utils::is_valid_input_value`, copied: why `value` is
/// not a valid `type_name` (`None` when it is).
fn invalid_input(
    types: &InputTypes,
    type_name: &str,
    value: &Value,
    path: QueryPathNode,
) -> Option<String> {
    match MetaTypeName::create(type_name) {
        MetaTypeName::NonNull(type_name) => match value {
            Value::Null => Some(valid_error(&path, format!("expected type \"{type_name}\""))),
            _ => invalid_input(types, type_name, value, path),
        },
        MetaTypeName::List(type_name) => match value {
            Value::List(items) => items.iter().enumerate().find_map(|(idx, item)| {
                invalid_input(
                    types,
                    type_name,
                    item,
                    QueryPathNode {
                        parent: Some(&path),
                        segment: QueryPathSegment::Index(idx),
                    },
                )
            }),
            Value::Null => None,
            _ => invalid_input(types, type_name, value, path),
        },
        MetaTypeName::Named(type_name) => {
            if let Value::Null = value {
                return None;
            }
            // async-graphql panics on an unknown type; a validated document names none.
            match types.0.get(type_name)? {
                InputType::Scalar {
                    is_valid: Some(is_valid),
                } => (!is_valid(value))
                    .then(|| valid_error(&path, format!("expected type \"{type_name}\""))),
                InputType::Scalar { is_valid: None } => None,
                InputType::Enum {
                    name: enum_name,
                    values,
                } => match value {
                    Value::Enum(name) if !values.contains(name.as_str()) => {
                        Some(not_in_enum(&path, enum_name, name))
                    }
                    Value::String(name) if !values.contains(name.as_str()) => {
                        Some(not_in_enum(&path, enum_name, name))
                    }
                    Value::Enum(_) | Value::String(_) => None,
                    _ => Some(valid_error(&path, format!("expected type \"{type_name}\""))),
                },
                InputType::InputObject {
                    name: object_name,
                    oneof,
                    fields,
                } => match value {
                    Value::Object(values) => {
                        if *oneof {
                            if values.len() != 1 {
                                return Some(valid_error(
                                    &path,
                                    "Oneof input objects requires have exactly one field"
                                        .to_string(),
                                ));
                            }
                            if let Value::Null = values[0] {
                                return Some(valid_error(
                                    &path,
                                    "Oneof Input Objects require that exactly one field must be supplied and that field must not be null"
                                        .to_string(),
                                ));
                            }
                        }
                        let mut input_names =
                            values.keys().map(AsRef::as_ref).collect::<HashSet<&str>>();
                        for field in fields {
                            input_names.remove(field.name.as_str());
                            if let Some(value) = values.get(field.name.as_str()) {
                                if let Some(reason) = invalid_input(
                                    types,
                                    &field.ty,
                                    value,
                                    QueryPathNode {
                                        parent: Some(&path),
                                        segment: QueryPathSegment::Name(&field.name),
                                    },
                                ) {
                                    return Some(reason);
                                }
                            } else if MetaTypeName::create(&field.ty).is_non_null()
                                && !field.has_default
                            {
                                return Some(valid_error(
                                    &path,
                                    format!(
                                        r#"field "{}" of type "{}" is required but not provided"#,
                                        field.name, field.ty,
                                    ),
                                ));
                            }
                        }
                        if let Some(name) = input_names.iter().next() {
                            return Some(valid_error(
                                &path,
                                format!("unknown field \"{name}\" of type \"{object_name}\""),
                            ));
                        }
                        None
                    }
                    _ => None,
                },
                InputType::Other => None,
            }
        }
    }
}

fn not_in_enum(path: &QueryPathNode, enum_name: &str, name: &str) -> String {
    valid_error(
        path,
        format!("enumeration type \"{enum_name}\" does not contain the value \"{name}\""),
    )
}
