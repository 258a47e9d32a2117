//! A tiny SQL text builder with numbered `$n` parameters, which both PostgreSQL and SQLite
//! (through sqlx) accept, so one statement text serves both engines.

use sea_orm::{DbBackend, Statement, Value};

/// SQL text plus its parameters.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    /// `prefix` followed by a statement built elsewhere with `$1..$n` placeholders
    /// (sea-query's PostgreSQL builder): later binds continue its numbering.
    pub(crate) fn wrapping(prefix: &str, built: Statement) -> Self {
        Sql {
            text: format!("{prefix}{}", built.sql),
            values: built.values.map(|v| v.0).unwrap_or_default(),
        }
    }

    /// Appends raw SQL text.
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a parameter placeholder bound to `value`.
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.values.len().to_string());
        self
    }

    /// Appends `$i, $j, ..`: one placeholder per value, comma-separated (a `VALUES` row's
    /// contents).
    pub(crate) fn bind_all(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Self {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self
    }

    /// Appends `(..), (..), ..`: one parenthesized row per item, its values written by `row`.
    pub(crate) fn push_rows<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push("(");
            row(self, item);
            self.push(")");
        }
        self
    }

    pub(crate) fn build(self, backend: DbBackend) -> Statement {
        Statement::from_sql_and_values(backend, self.text, self.values)
    }
}
