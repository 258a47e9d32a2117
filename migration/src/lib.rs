//! parley's database migrations. Each migration is one concern, additive, and reversible:
//! `down` undoes exactly what `up` did.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_conversations;
mod m20261126_000002_create_messages;
mod m20261126_000003_create_conversation_participants;
mod m20261201_000001_message_sequence;
mod m20261201_000002_messaging_state;
mod m20261201_000003_search;
mod m20261201_000004_conversation_counts;
mod m20261202_000001_search_keys;
mod m20261202_000003_message_txid;
mod m20261202_000004_search_merge;
mod m20261202_000005_search_merge_off_commits;
mod m20261202_000006_backfilled_headers;

/// Runs parley's migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_conversations::Migration),
            Box::new(m20261126_000002_create_messages::Migration),
            Box::new(m20261126_000003_create_conversation_participants::Migration),
            Box::new(m20261201_000001_message_sequence::Migration),
            Box::new(m20261201_000002_messaging_state::Migration),
            Box::new(m20261201_000003_search::Migration),
            Box::new(m20261201_000004_conversation_counts::Migration),
            Box::new(m20261202_000001_search_keys::Migration),
            Box::new(m20261202_000003_message_txid::Migration),
            Box::new(m20261202_000004_search_merge::Migration),
            Box::new(m20261202_000005_search_merge_off_commits::Migration),
            Box::new(m20261202_000006_backfilled_headers::Migration),
        ]
    }
}
