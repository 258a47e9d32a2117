//! The service layer on a real database: the record path, its invariants under
//! concurrency, reads, and migrations both ways.

use chrono::{DateTime, Duration, TimeZone, Utc};
use migration::{Migrator, MigratorTrait};
use parley_tests::{TestDb, on_both_engines};
use service::query::{self, ConversationFilter, MessageFilter, MessageScope, PageRequest, Window};
use service::record::{NewMessage, record_message};
use service::{Channel, Direction, Error, Kind, Settings};

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 11, 1, 14, minute, 0).unwrap()
}

fn sms(direction: Direction, from: &str, to: &str, body: &str, minute: u32) -> NewMessage {
    NewMessage {
        channel: Channel::Sms,
        kind: Some(Kind::Sms),
        direction,
        from: from.into(),
        to: vec![to.into()],
        body: body.into(),
        attachments: vec![],
        provider_message_id: None,
        sent_at: Some(at(minute)),
    }
}

on_both_engines!(
    outbound_then_inbound_reply_share_one_conversation,
    out_of_order_arrival_keeps_latest_message_as_last,
    replayed_provider_id_is_stored_once,
    inbound_with_bad_addresses_is_stored_unassigned,
    outbound_with_bad_addresses_is_rejected_and_nothing_stored,
    structurally_bad_input_stores_nothing,
    concurrent_first_messages_create_one_conversation,
    concurrent_replays_of_one_provider_id_store_one_message,
    conversations_page_by_activity_in_both_directions,
    threads_page_oldest_first_in_both_directions,
    batched_thread_pages_equal_single_pages,
    email_conversations_normalize_and_snippet_html,
    migrations_go_down_and_up_again,
    unknown_stored_channel_is_an_error_not_a_guess,
    pages_decode_rows_as_seaorm_does,
    one_connection_runs_every_statement_on_one_connection,
    warm_connections_are_used_again_only_when_clean_fresh_and_spare,
    a_conversation_with_its_thread_in_one_statement_equals_the_two,
);

async fn outbound_then_inbound_reply_share_one_conversation(t: &TestDb) {
    let s = Settings::default();
    let out = record_message(
        &t.db,
        &s,
        sms(
            Direction::Outbound,
            "+12016661234",
            "(804) 555-1234",
            "Hello there",
            0,
        ),
    )
    .await
    .unwrap();
    assert!(out.conversation_created);
    assert!(!out.duplicate);
    let reply = record_message(
        &t.db,
        &s,
        sms(
            Direction::Inbound,
            "+1 804 555 1234",
            "2016661234",
            "Hi back",
            5,
        ),
    )
    .await
    .unwrap();
    assert!(!reply.conversation_created);
    let c = reply.conversation.unwrap();
    assert_eq!(Some(c.id), out.conversation.as_ref().map(|c| c.id));
    assert_eq!(c.message_count, 2);
    assert_eq!(c.first_message_at, at(0));
    assert_eq!(c.last_message_at, at(5));
    assert_eq!(c.last_message_id, Some(reply.message.id));
    assert_eq!(c.snippet, "Hi back");
    assert_eq!(c.channel, service::Channel::Sms);
    assert_eq!(
        service::normalize::split_participants_key(&c.participants_key),
        vec!["+12016661234", "+18045551234"]
    );
    assert_eq!(reply.message.from_address.as_deref(), Some("+18045551234"));
    assert_eq!(t.count("conversations").await, 1);
    assert_eq!(t.count("messages").await, 2);
    assert_eq!(t.count("conversation_participants").await, 2);
}

async fn out_of_order_arrival_keeps_latest_message_as_last(t: &TestDb) {
    let s = Settings::default();
    let late = record_message(
        &t.db,
        &s,
        sms(
            Direction::Outbound,
            "+12016661234",
            "+18045551234",
            "latest",
            30,
        ),
    )
    .await
    .unwrap();
    let early = record_message(
        &t.db,
        &s,
        sms(
            Direction::Inbound,
            "+18045551234",
            "+12016661234",
            "earliest",
            10,
        ),
    )
    .await
    .unwrap();
    let c = early.conversation.unwrap();
    assert_eq!(c.message_count, 2);
    assert_eq!(c.first_message_at, at(10));
    assert_eq!(c.last_message_at, at(30));
    assert_eq!(c.last_message_id, Some(late.message.id));
    assert_eq!(c.snippet, "latest");
    // A tie on sent_at goes to the higher id: the later-stored message becomes last.
    let tie = record_message(
        &t.db,
        &s,
        sms(
            Direction::Inbound,
            "+18045551234",
            "+12016661234",
            "tie",
            30,
        ),
    )
    .await
    .unwrap();
    let c = tie.conversation.unwrap();
    assert_eq!(c.last_message_id, Some(tie.message.id));
    assert_eq!(c.snippet, "tie");
    assert_eq!(c.message_count, 3);
}

async fn replayed_provider_id_is_stored_once(t: &TestDb) {
    let s = Settings::default();
    let mut m = sms(
        Direction::Inbound,
        "+18045551234",
        "+12016661234",
        "once",
        1,
    );
    m.provider_message_id = Some("message-1".into());
    let first = record_message(&t.db, &s, m.clone()).await.unwrap();
    let again = record_message(&t.db, &s, m.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert!(!again.conversation_created);
    assert_eq!(again.message, first.message);
    assert_eq!(again.conversation.unwrap().message_count, 1);
    // The same provider id on the other channel is a different message.
    let email = NewMessage {
        channel: Channel::Email,
        kind: None,
        direction: Direction::Inbound,
        from: "a@example.com".into(),
        to: vec!["b@example.com".into()],
        body: "x".into(),
        attachments: vec![],
        provider_message_id: Some("message-1".into()),
        sent_at: None,
    };
    assert!(!record_message(&t.db, &s, email).await.unwrap().duplicate);
    assert_eq!(t.count("messages").await, 2);
}

async fn inbound_with_bad_addresses_is_stored_unassigned(t: &TestDb) {
    let s = Settings::default();
    let r = record_message(
        &t.db,
        &s,
        sms(Direction::Inbound, "not-a-number", "+12016661234", "odd", 2),
    )
    .await
    .unwrap();
    assert!(r.conversation.is_none());
    assert!(!r.conversation_created);
    assert_eq!(r.message.conversation_id, None);
    let reason = r.message.assignment_error.clone().unwrap();
    assert_eq!(
        reason,
        "from: letters are not accepted in phone numbers; write vanity numbers like 1-800-FLOWERS as digits"
    );
    assert_eq!(r.message.from_raw, "not-a-number");
    assert_eq!(t.count("conversations").await, 0);
    let w = Window::new(
        service::cursor::CursorKind::Message,
        &PageRequest::default(),
        &s.limits,
    )
    .unwrap();
    let page = query::list_messages(
        &t.db,
        &service::Viewer::Everyone,
        MessageScope::Unassigned,
        &MessageFilter::default(),
        &w,
    )
    .await
    .unwrap();
    assert_eq!(page.items, vec![r.message]);
    assert_eq!(query::count_unassigned(&t.db).await.unwrap(), 1);
}

async fn outbound_with_bad_addresses_is_rejected_and_nothing_stored(t: &TestDb) {
    let s = Settings::default();
    let mut m = sms(Direction::Outbound, "+12016661234", "+18045551234", "x", 1);
    m.to.push("jane@example.com".into());
    match record_message(&t.db, &s, m).await {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "to[1]"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(t.count("messages").await, 0);
    assert_eq!(t.count("conversations").await, 0);
}

async fn structurally_bad_input_stores_nothing(t: &TestDb) {
    let s = Settings::default();
    let base = sms(Direction::Inbound, "+12016661234", "+18045551234", "x", 1);
    let cases: Vec<(&str, NewMessage)> = vec![
        (
            "to",
            NewMessage {
                to: vec![],
                ..base.clone()
            },
        ),
        (
            "to",
            NewMessage {
                to: vec!["+18045551234".into(); 51],
                ..base.clone()
            },
        ),
        (
            "body",
            NewMessage {
                body: "a".repeat(1024 * 1024 + 1),
                ..base.clone()
            },
        ),
        (
            "body",
            NewMessage {
                body: "nul\0byte".into(),
                ..base.clone()
            },
        ),
        (
            "from",
            NewMessage {
                from: "+1201\u{0}6661234".into(),
                ..base.clone()
            },
        ),
        (
            "kind",
            NewMessage {
                kind: Some(Kind::Email),
                ..base.clone()
            },
        ),
        (
            "attachments",
            NewMessage {
                attachments: vec!["https://x.test/a".into(); 11],
                ..base.clone()
            },
        ),
        (
            "attachments[0]",
            NewMessage {
                attachments: vec!["ftp://x".into()],
                ..base.clone()
            },
        ),
        (
            "sentAt",
            NewMessage {
                sent_at: Some(Utc::now() + Duration::days(3)),
                ..base.clone()
            },
        ),
    ];
    for (field, m) in cases {
        match record_message(&t.db, &s, m).await {
            Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidInput on {field}, got {other:?}"),
        }
    }
    // At the limits, it passes.
    let at_limits = NewMessage {
        to: vec!["+18045551234".into(); 50],
        body: "a".repeat(1024 * 1024),
        attachments: vec!["https://x.test/a".into(); 10],
        ..base
    };
    record_message(&t.db, &s, at_limits).await.unwrap();
    assert_eq!(t.count("messages").await, 1);
}

async fn concurrent_first_messages_create_one_conversation(t: &TestDb) {
    let s = Settings::default();
    let spellings = [
        ("+1 415-555-2671", "jane"),
        ("(415) 555-2671", "jane"),
        ("4155552671", "jane"),
    ];
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let db = t.db.clone();
        let (from, _) = spellings[i as usize % 3];
        let to = ["+1 (201) 666-1234", "2016661234", "+12016661234"][(i as usize / 3) % 3];
        let m = NewMessage {
            channel: Channel::Sms,
            kind: Some(if i % 2 == 0 { Kind::Sms } else { Kind::Mms }),
            direction: if i % 2 == 0 {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            from: if i % 2 == 0 { from.into() } else { to.into() },
            to: vec![if i % 2 == 0 { to.into() } else { from.into() }],
            body: format!("message {i}"),
            attachments: vec![],
            provider_message_id: Some(format!("race-{i}")),
            sent_at: Some(at(0) + Duration::seconds(i64::from(i))),
        };
        tasks.push(tokio::spawn(
            async move { record_message(&db, &s, m).await },
        ));
    }
    let mut created = 0;
    for task in tasks {
        let r = task.await.unwrap().expect("no caller sees an error");
        created += usize::from(r.conversation_created);
    }
    assert_eq!(created, 1, "exactly one caller created the conversation");
    assert_eq!(t.count("conversations").await, 1);
    assert_eq!(t.count("messages").await, 100);
    let w = Window::new(
        service::cursor::CursorKind::Conversation,
        &PageRequest::default(),
        &s.limits,
    )
    .unwrap();
    let page = query::list_conversations(
        &t.db,
        &service::Viewer::Everyone,
        s.default_region,
        &ConversationFilter::default(),
        &w,
    )
    .await
    .unwrap();
    let c = &page.items[0];
    assert_eq!(c.message_count, 100);
    assert_eq!(c.first_message_at, at(0));
    assert_eq!(c.last_message_at, at(0) + Duration::seconds(99));
    assert_eq!(c.snippet, "message 99");
}

async fn concurrent_replays_of_one_provider_id_store_one_message(t: &TestDb) {
    let s = Settings::default();
    let mut m = sms(
        Direction::Inbound,
        "+18045551234",
        "+12016661234",
        "redelivered",
        1,
    );
    m.provider_message_id = Some("webhook-7".into());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (db, m) = (t.db.clone(), m.clone());
            tokio::spawn(async move { record_message(&db, &s, m).await })
        })
        .collect();
    let mut originals = 0;
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let r = task.await.unwrap().expect("replays succeed");
        originals += usize::from(!r.duplicate);
        ids.insert(r.message.id);
    }
    assert_eq!(originals, 1);
    assert_eq!(ids.len(), 1, "every caller sees the same message");
    assert_eq!(t.count("messages").await, 1);
    assert_eq!(t.count("conversations").await, 1);
}

async fn conversations_page_by_activity_in_both_directions(t: &TestDb) {
    let s = Settings::default();
    // 23 conversations, conversation i last active at minute i.
    for i in 0..23u32 {
        record_message(
            &t.db,
            &s,
            sms(
                Direction::Outbound,
                "+12016661234",
                &format!("+1804555{:04}", 1000 + i),
                "x",
                i,
            ),
        )
        .await
        .unwrap();
    }
    let limits = s.limits;
    let page = |req: PageRequest| {
        let db = t.db.clone();
        async move {
            let w = Window::new(service::cursor::CursorKind::Conversation, &req, &limits).unwrap();
            query::list_conversations(
                &db,
                &service::Viewer::Everyone,
                s.default_region,
                &ConversationFilter::default(),
                &w,
            )
            .await
            .unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let p = page(PageRequest {
            first: Some(10),
            after: after.clone(),
            ..Default::default()
        })
        .await;
        pages += 1;
        assert_eq!(p.has_previous_page, after.is_some());
        seen.extend(p.items.iter().map(|c| c.last_message_at));
        after = p.items.last().map(query::conversation_cursor);
        if !p.has_next_page {
            assert_eq!(p.items.len(), 3);
            break;
        }
        assert_eq!(p.items.len(), 10);
    }
    assert_eq!(pages, 3);
    let expected: Vec<_> = (0..23).rev().map(at).collect();
    assert_eq!(seen, expected);

    let mut back = Vec::new();
    let mut before = None;
    loop {
        let p = page(PageRequest {
            last: Some(10),
            before: before.clone(),
            ..Default::default()
        })
        .await;
        assert_eq!(p.has_next_page, before.is_some());
        let mut chunk: Vec<_> = p.items.iter().map(|c| c.last_message_at).collect();
        chunk.extend(back);
        back = chunk;
        before = p.items.first().map(query::conversation_cursor);
        if !p.has_previous_page {
            break;
        }
    }
    assert_eq!(back, expected);

    let filtered = {
        let w = Window::new(
            service::cursor::CursorKind::Conversation,
            &PageRequest::default(),
            &limits,
        )
        .unwrap();
        let f = ConversationFilter {
            participant: Some("(804) 555-1005".into()),
            ..Default::default()
        };
        query::list_conversations(&t.db, &service::Viewer::Everyone, s.default_region, &f, &w)
            .await
            .unwrap()
    };
    assert_eq!(filtered.items.len(), 1);
    assert_eq!(filtered.items[0].last_message_at, at(5));
    let window_filter = ConversationFilter {
        active_since: Some(at(10)),
        active_before: Some(at(20)),
        channel: Some(Channel::Sms),
        ..Default::default()
    };
    assert_eq!(
        query::count_conversations(
            &t.db,
            &service::Viewer::Everyone,
            s.default_region,
            &window_filter,
            s.limits.max_count_rows,
        )
        .await
        .unwrap(),
        query::Count::exact(10)
    );
    let email_only = ConversationFilter {
        channel: Some(Channel::Email),
        ..Default::default()
    };
    assert_eq!(
        query::count_conversations(
            &t.db,
            &service::Viewer::Everyone,
            s.default_region,
            &email_only,
            s.limits.max_count_rows,
        )
        .await
        .unwrap(),
        query::Count::exact(0)
    );
}

async fn threads_page_oldest_first_in_both_directions(t: &TestDb) {
    let s = Settings::default();
    let mut cid = 0;
    for i in 0..12u32 {
        let d = if i % 3 == 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let r = record_message(
            &t.db,
            &s,
            sms(d, "+12016661234", "+18045551234", &format!("m{i}"), i),
        )
        .await
        .unwrap();
        cid = r.conversation.unwrap().id;
    }
    let scope = MessageScope::Conversation(cid);
    let get = |req: PageRequest, filter: MessageFilter| {
        let db = t.db.clone();
        async move {
            let w = Window::new(service::cursor::CursorKind::Message, &req, &s.limits).unwrap();
            query::list_messages(&db, &service::Viewer::Everyone, scope, &filter, &w)
                .await
                .unwrap()
        }
    };
    let last5 = get(
        PageRequest {
            last: Some(5),
            ..Default::default()
        },
        MessageFilter::default(),
    )
    .await;
    let bodies: Vec<_> = last5.items.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m7", "m8", "m9", "m10", "m11"]);
    assert!(last5.has_previous_page);
    assert!(!last5.has_next_page);
    let before = query::message_cursor(&last5.items[0]);
    let prev = get(
        PageRequest {
            last: Some(5),
            before: Some(before),
            ..Default::default()
        },
        MessageFilter::default(),
    )
    .await;
    let bodies: Vec<_> = prev.items.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m2", "m3", "m4", "m5", "m6"]);
    assert!(prev.has_previous_page);
    assert!(prev.has_next_page);
    let first = get(
        PageRequest {
            first: Some(12),
            ..Default::default()
        },
        MessageFilter::default(),
    )
    .await;
    assert_eq!(first.items.len(), 12);
    assert!(!first.has_next_page);
    let inbound = get(
        PageRequest::default(),
        MessageFilter {
            direction: Some(Direction::Inbound),
            kind: None,
        },
    )
    .await;
    let bodies: Vec<_> = inbound.items.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m0", "m3", "m6", "m9"]);
}

async fn batched_thread_pages_equal_single_pages(t: &TestDb) {
    let s = Settings::default();
    let mut ids = Vec::new();
    for c in 0..4u32 {
        for i in 0..(c * 3) {
            let r = record_message(
                &t.db,
                &s,
                sms(
                    Direction::Outbound,
                    "+12016661234",
                    &format!("+1804555{:04}", 2000 + c),
                    &format!("c{c}m{i}"),
                    i,
                ),
            )
            .await
            .unwrap();
            if i == 0 {
                ids.push(r.conversation.unwrap().id);
            }
        }
    }
    for req in [
        PageRequest {
            last: Some(3),
            ..Default::default()
        },
        PageRequest {
            first: Some(2),
            ..Default::default()
        },
    ] {
        let w = Window::new(service::cursor::CursorKind::Message, &req, &s.limits).unwrap();
        let batch = query::list_messages_batch(&t.db, &ids, &MessageFilter::default(), &w)
            .await
            .unwrap();
        for id in &ids {
            let single = query::list_messages(
                &t.db,
                &service::Viewer::Everyone,
                MessageScope::Conversation(*id),
                &MessageFilter::default(),
                &w,
            )
            .await
            .unwrap();
            assert_eq!(batch[id], single);
        }
    }
    let counts = query::count_messages_batch(&t.db, &ids, &MessageFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(
        ids.iter().map(|id| counts[id]).collect::<Vec<_>>(),
        [3, 6, 9].map(query::Count::exact)
    );
    // Counted up to a limit: exact up to it, the limit and not exact past it.
    let counts = query::count_messages_batch(&t.db, &ids, &MessageFilter::default(), 6)
        .await
        .unwrap();
    assert_eq!(
        ids.iter().map(|id| counts[id]).collect::<Vec<_>>(),
        [
            query::Count::exact(3),
            query::Count::exact(6),
            query::Count { n: 6, exact: false }
        ]
    );
}

async fn email_conversations_normalize_and_snippet_html(t: &TestDb) {
    let s = Settings::default();
    let m = |from: &str, to: &str, body: &str| NewMessage {
        channel: Channel::Email,
        kind: None,
        direction: Direction::Outbound,
        from: from.into(),
        to: vec![to.into()],
        body: body.into(),
        attachments: vec!["https://files.example.com/a.pdf".into()],
        provider_message_id: None,
        sent_at: None,
    };
    let a = record_message(
        &t.db,
        &s,
        m(
            "Support <Support+tickets@UseHatchApp.com>",
            "Jane.Doe@Gmail.com",
            "<html><body><p>Hello&nbsp;<b>Jane</b>,</p>\n<p>thanks</p></body></html>",
        ),
    )
    .await
    .unwrap();
    let b = record_message(
        &t.db,
        &s,
        m(
            "jane.doe@gmail.com",
            "support@usehatchapp.com",
            "plain reply",
        ),
    )
    .await
    .unwrap();
    let (ca, cb) = (a.conversation.unwrap(), b.conversation.unwrap());
    assert_eq!(ca.id, cb.id);
    assert_eq!(ca.snippet, "Hello Jane, thanks");
    assert_eq!(cb.message_count, 2);
    assert_eq!(
        service::normalize::split_participants_key(&cb.participants_key),
        vec!["jane.doe@gmail.com", "support@usehatchapp.com"]
    );
    let found = query::find_conversation_by_participants(
        &t.db,
        &service::Viewer::Everyone,
        s.default_region,
        Channel::Email,
        &[
            "SUPPORT@usehatchapp.com".into(),
            "jane.doe+x@gmail.com".into(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(found.map(|c| c.id), Some(ca.id));
}

async fn migrations_go_down_and_up_again(t: &TestDb) {
    let s = Settings::default();
    record_message(
        &t.db,
        &s,
        sms(Direction::Outbound, "+12016661234", "+18045551234", "x", 1),
    )
    .await
    .unwrap();
    // On one connection, as `parley migrate` and start-up migrate (pooled SQLite connections
    // that sat idle through a schema change have failed on it).
    let single = service::db::DbOptions {
        max_connections: 1,
        ..parley_tests::test_db_options()
    };
    let migrator = service::db::connect(&t.url, &single).await.unwrap();
    Migrator::down(&migrator, None).await.unwrap();
    let status = Migrator::get_pending_migrations(&migrator).await.unwrap();
    // Every migration went down.
    assert_eq!(status.len(), Migrator::migrations().len());
    assert!(status.len() >= 4);
    Migrator::up(&migrator, None).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&migrator)
            .await
            .unwrap()
            .len(),
        0
    );
    migrator.close().await.unwrap();
    assert_eq!(t.count("messages").await, 0);
    record_message(
        &t.db,
        &s,
        sms(Direction::Outbound, "+12016661234", "+18045551234", "x", 1),
    )
    .await
    .unwrap();
    assert_eq!(t.count("conversations").await, 1);
}

/// A pooled SQLite connection caches the schema; one that sat idle while migrations created
/// the provider-id index planned `ON CONFLICT (channel, provider_message_id)` without it and
/// failed about once in 17 fresh databases. Databases are migrated on a connection of their
/// own now (`api::database::connect_migrated`); 40 fresh ones in a row must all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_sqlite_pools_see_every_index_the_migrations_made() {
    for round in 0..40 {
        let t = TestDb::sqlite().await;
        let lines: Vec<(u64, String)> = (0..50u64)
            .map(|i| {
                let line = serde_json::json!({ "channel": "SMS", "direction": "OUTBOUND",
                    "from": "+12016661234", "to": ["+18045551234"], "body": "x",
                    "providerMessageId": format!("p{i}") });
                (i + 1, line.to_string())
            })
            .collect();
        let r = service::import::import_messages(
            &t.db,
            &Settings::default(),
            lines,
            true,
            1000,
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(r.imported, 50);
        t.cleanup().await;
    }
}

/// SQLite checkpoints the WAL off the commit path (`service::db`): a task beside the
/// writers copies it every half second, so it never reaches the 10,000 pages at which
/// SQLite would checkpoint inside a commit (the safety net set on every pooled connection).
/// 16,000 pages are written in 800 commits over about two seconds: without that task the
/// WAL file would grow to the safety net's 10,000 pages (40 MiB) before anything copied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_the_wal_beside_the_writers() {
    use sea_orm::{ConnectionTrait, Statement};
    let t = TestDb::sqlite().await;
    let row =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "PRAGMA wal_autocheckpoint",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        i64::from(service::db::WAL_AUTOCHECKPOINT_PAGES)
    );
    let mut wal =
        t.db.get_sqlite_connection_pool()
            .connect_options()
            .get_filename()
            .as_os_str()
            .to_owned();
    wal.push("-wal");
    t.db.execute_unprepared("CREATE TABLE scratch (b BLOB NOT NULL)")
        .await
        .unwrap();
    let mut largest = 0;
    for _ in 0..800 {
        let txn = service::db::begin_write(&t.db).await.unwrap();
        // 80 KB: 20 pages of 4 KiB.
        txn.execute_unprepared("INSERT INTO scratch VALUES (randomblob(80000))")
            .await
            .unwrap();
        txn.commit().await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(
        largest < 24 << 20,
        "the WAL grew to {largest} bytes: nothing checkpointed it beside the writers"
    );
    assert_eq!(t.count("scratch").await, 800);
    t.cleanup().await;
}

/// The FTS5 index never merges inside the commits that write it (`automerge` 0, migration
/// `m20261202_000005`), and leaves crisis merges (all of a level at once, inside a commit)
/// to levels of 64 (`m20261202_000004`): a process writing without parley's merging task
/// still keeps the index bounded.
#[tokio::test]
async fn sqlite_search_index_does_not_merge_inside_commits() {
    use sea_orm::{ConnectionTrait, Statement};
    let t = TestDb::sqlite().await;
    for (key, value) in [("automerge", 0), ("crisismerge", 64)] {
        let row =
            t.db.query_one_raw(Statement::from_string(
                t.db.get_database_backend(),
                format!("SELECT v FROM messages_fts_config WHERE k = '{key}'"),
            ))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is configured"));
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), value, "{key}");
    }
    t.cleanup().await;
}

/// The search index is merged beside the writers (`service::db`, a step every
/// `MERGE_EVERY_COMMITS` commits): after 500 one-message commits it holds a few segments,
/// where FTS5 left alone with `automerge` 0 would keep up to 64 a level (about 60 here),
/// and every search would read them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_search_index_is_merged_beside_the_writers() {
    use sea_orm::{ConnectionTrait, Statement};
    let t = TestDb::sqlite().await;
    let s = Settings::default();
    for i in 0..500 {
        let to = format!("+1201666{:04}", i % 50);
        let body = format!("order {i} refund word{i} zephyr");
        record_message(
            &t.db,
            &s,
            sms(Direction::Inbound, "+18045551234", &to, &body, i % 60),
        )
        .await
        .unwrap();
    }
    let segments = || async {
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT count(DISTINCT segid) FROM messages_fts_idx",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
    };
    // The last step may still be running.
    let mut count = segments().await;
    for _ in 0..50 {
        if count <= 12 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        count = segments().await;
    }
    assert!(
        count <= 12,
        "the index holds {count} segments after 500 commits: nothing merged it beside the writers"
    );
    // The merged index is whole: FTS5's own check against the messages, and every message
    // found.
    t.db.execute_unprepared("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
        .await
        .unwrap();
    let found =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zephyr'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(found, 500);
    t.cleanup().await;
}

/// A stored channel that is none of parley's is a failed read, never a guessed channel
/// (a guess would give the conversation a wrong key).
async fn unknown_stored_channel_is_an_error_not_a_guess(t: &TestDb) {
    use sea_orm::{ConnectionTrait, Statement};
    let recorded = record_message(
        &t.db,
        &Settings::default(),
        sms(Direction::Outbound, "+12016661234", "+18045551234", "hi", 0),
    )
    .await
    .unwrap();
    let id = recorded.conversation.unwrap().id;
    t.db.execute_raw(Statement::from_string(
        t.db.get_database_backend(),
        format!("UPDATE conversations SET channel = 'FAX' WHERE id = {id}"),
    ))
    .await
    .unwrap();
    let found = query::find_conversation(&t.db, &service::Viewer::Everyone, id).await;
    assert!(matches!(found, Err(Error::Db(_))), "{found:?}");
}

/// The read side decodes its pages' rows by position (and builds a conversation's
/// `participants` from `participants_key`): every listing and lookup answers exactly the
/// models SeaORM's own by-name decoding reads from the same rows, NULLs, JSON, enums,
/// non-ASCII text and timestamps with fractions included (on PostgreSQL, through the
/// decoders' binary fast paths).
async fn pages_decode_rows_as_seaorm_does(t: &TestDb) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    use service::{conversation, message};
    let s = Settings::default();
    let everyone = service::Viewer::Everyone;
    let mut mms = sms(Direction::Inbound, "+18045551234", "+12016661234", "pic", 3);
    mms.kind = Some(Kind::Mms);
    mms.attachments = vec!["https://example.com/a.png".into()];
    mms.provider_message_id = Some("SM-1".into());
    mms.sent_at = Some(at(3) + Duration::microseconds(123_457));
    let email = NewMessage {
        channel: Channel::Email,
        kind: None,
        direction: Direction::Outbound,
        from: "Agent@Parley.example".into(),
        to: vec!["b@example.com".into(), "a@example.com".into()],
        body: "<p>Hello <b>both</b></p>".into(),
        attachments: vec![],
        provider_message_id: None,
        sent_at: Some(at(5) + Duration::nanoseconds(1_000)),
    };
    for m in [
        sms(
            Direction::Outbound,
            "+12016661234",
            "+18045551234",
            "one",
            1,
        ),
        mms,
        email,
        sms(
            Direction::Inbound,
            "not-a-number",
            "+12016661234",
            "odd: ünïcödé ✓ 📨",
            7,
        ),
        sms(
            Direction::Outbound,
            "+12016661234",
            "+18045559999",
            "other",
            9,
        ),
    ] {
        record_message(&t.db, &s, m).await.unwrap();
    }
    let principal = service::Principal::development();
    let first = conversation::Entity::find()
        .order_by_asc(conversation::Column::Id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    service::state::mark(
        &t.db,
        &principal,
        s.default_region,
        first.id,
        Some("+12016661234"),
        service::state::Mark::ReadUpTo(None),
    )
    .await
    .unwrap();

    let stored = conversation::Entity::find()
        .order_by_desc(conversation::Column::LastMessageAt)
        .order_by_desc(conversation::Column::Id)
        .all(&t.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    let w = |kind| Window::new(kind, &PageRequest::default(), &s.limits).unwrap();
    let conversations = w(service::cursor::CursorKind::Conversation);
    let page = query::list_conversations(
        &t.db,
        &everyone,
        s.default_region,
        &ConversationFilter::default(),
        &conversations,
    )
    .await
    .unwrap();
    assert_eq!(page.items, stored);
    let with_state = query::list_conversations_with_state(
        &t.db,
        &everyone,
        s.default_region,
        &ConversationFilter::default(),
        &conversations,
        "+12016661234",
    )
    .await
    .unwrap();
    let (models, states): (Vec<_>, Vec<_>) = with_state.items.into_iter().unzip();
    assert_eq!(models, stored);
    use service::state::conversation_state as cs;
    let stored_states = cs::Entity::find()
        .filter(cs::Column::Inbox.eq("+12016661234"))
        .all(&t.db)
        .await
        .unwrap();
    assert!(
        stored_states
            .iter()
            .any(|r| r.conversation_id == first.id && r.read_up_to > 0)
    );
    for (c, state) in stored.iter().zip(&states) {
        let row = stored_states.iter().find(|r| r.conversation_id == c.id);
        let want = row.map(|r| query::InboxState {
            read_up_to: r.read_up_to,
            sent_after: r.sent_after,
            archived: r.archived,
        });
        assert_eq!(*state, want, "{c:?}");
    }
    assert!(
        states.iter().any(Option::is_none),
        "the email conversation has no state row"
    );
    for c in &stored {
        let found = query::find_conversation(&t.db, &everyone, c.id)
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(c));
    }

    let messages = w(service::cursor::CursorKind::Message);
    for c in &stored {
        let rows = message::Entity::find()
            .filter(message::Column::ConversationId.eq(c.id))
            .order_by_asc(message::Column::SentAt)
            .order_by_asc(message::Column::Id)
            .all(&t.db)
            .await
            .unwrap();
        assert!(!rows.is_empty());
        let page = query::list_messages(
            &t.db,
            &everyone,
            MessageScope::Conversation(c.id),
            &MessageFilter::default(),
            &messages,
        )
        .await
        .unwrap();
        assert_eq!(page.items, rows);
        let batch =
            query::list_messages_batch(&t.db, &[c.id], &MessageFilter::default(), &messages)
                .await
                .unwrap();
        assert_eq!(batch[&c.id].items, rows);
        for m in &rows {
            let found = query::find_message(&t.db, &everyone, m.id).await.unwrap();
            assert_eq!(found.as_ref(), Some(m));
        }
    }
    let unassigned = message::Entity::find()
        .filter(message::Column::ConversationId.is_null())
        .all(&t.db)
        .await
        .unwrap();
    assert_eq!(unassigned.len(), 1);
    let page = query::list_messages(
        &t.db,
        &everyone,
        MessageScope::Unassigned,
        &MessageFilter::default(),
        &messages,
    )
    .await
    .unwrap();
    assert_eq!(page.items, unassigned);
}

/// `query::OneConnection` (what `conversation(id:)` runs its lookup and thread page on) runs
/// every statement given to it on one pooled connection until it is dropped: a TEMP table,
/// private to the connection that made it, is seen by each of its later statements although
/// the pool holds other idle connections an acquire per statement would hand out. The read
/// side's own functions run through it too, and the pool serves again once it is dropped.
async fn one_connection_runs_every_statement_on_one_connection(t: &TestDb) {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = t.db.get_database_backend();
    let s = Settings::default();
    record_message(
        &t.db,
        &s,
        sms(Direction::Inbound, "+18045551234", "+12016661234", "hi", 1),
    )
    .await
    .unwrap();
    // Open several connections at once, so the pool has idle ones to hand out.
    let warm: Vec<_> = (0..4).map(|_| query::OneConnection::new(&t.db)).collect();
    let select_one = || Statement::from_string(backend, "SELECT 1");
    futures::future::try_join_all(warm.iter().map(|w| w.query_one_raw(select_one())))
        .await
        .unwrap();
    drop(warm);

    let one = query::OneConnection::new(&t.db);
    one.execute_unprepared("CREATE TEMP TABLE one_connection_probe (x BIGINT)")
        .await
        .unwrap();
    one.execute_unprepared("INSERT INTO one_connection_probe VALUES (7)")
        .await
        .unwrap();
    for _ in 0..5 {
        let row = one
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT x FROM one_connection_probe",
            ))
            .await
            .unwrap()
            .expect("a row");
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 7);
        let id = t.ids("conversations").await[0];
        let found = query::find_conversation(&one, &service::Viewer::Everyone, id)
            .await
            .unwrap()
            .expect("the conversation");
        let page = query::list_messages_batch(
            &one,
            &[found.id],
            &MessageFilter::default(),
            &Window::new(
                service::cursor::CursorKind::Message,
                &PageRequest::default(),
                &s.limits,
            )
            .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(page[&found.id].items.len(), 1);
    }
    drop(one);
    // The connection went back: the pool answers (its acquire timeout would fail this).
    t.db.query_one_raw(select_one()).await.unwrap();
}

/// A `query::Warm` keeps the connection a `OneConnection::warm` ran its statements on, and
/// the next one takes it (a TEMP table, private to its connection, is still there) instead of
/// one from the pool. It keeps none after a statement that failed or was dropped half-way,
/// none idle for longer than `WARM_IDLE` (a task gives those back), at most half the pool,
/// and none while the pool has no connection to spare.
async fn warm_connections_are_used_again_only_when_clean_fresh_and_spare(t: &TestDb) {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = t.db.get_database_backend();
    let sql = |s: &str| Statement::from_string(backend, s.to_owned());
    let warm = query::Warm::of(&t.db);
    assert!(
        std::sync::Arc::ptr_eq(&warm, &query::Warm::of(&t.db)),
        "one per pool"
    );
    let max = parley_tests::test_db_options().max_connections as usize;

    // Kept, and taken again: the TEMP table made through the first is seen by the second.
    let first = query::OneConnection::warm(&t.db, &warm);
    first
        .execute_unprepared("CREATE TEMP TABLE warm_probe (x BIGINT)")
        .await
        .unwrap();
    first
        .execute_unprepared("INSERT INTO warm_probe VALUES (7)")
        .await
        .unwrap();
    drop(first);
    assert_eq!(warm.len(), 1);
    for _ in 0..3 {
        let again = query::OneConnection::warm(&t.db, &warm);
        let row = again
            .query_one_raw(sql("SELECT x FROM warm_probe"))
            .await
            .unwrap()
            .expect("the warm connection's TEMP table");
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 7);
        assert!(warm.is_empty(), "taken out while in use");
        drop(again);
        assert_eq!(warm.len(), 1);
    }

    // A failed statement: back to the pool, not kept.
    let failed = query::OneConnection::warm(&t.db, &warm);
    assert!(
        failed
            .query_one_raw(sql("SELECT nope FROM nowhere"))
            .await
            .is_err()
    );
    drop(failed);
    assert!(warm.is_empty(), "kept after a failed statement");
    // Nor after a failed statement followed by a good one.
    let failed = query::OneConnection::warm(&t.db, &warm);
    assert!(
        failed
            .query_one_raw(sql("SELECT nope FROM nowhere"))
            .await
            .is_err()
    );
    failed.query_one_raw(sql("SELECT 1")).await.unwrap();
    drop(failed);
    assert!(
        warm.is_empty(),
        "kept after a failed statement and a good one"
    );

    // A statement dropped half-way: not kept either.
    let cut = query::OneConnection::warm(&t.db, &warm);
    let slow = match backend {
        sea_orm::DbBackend::Postgres => "SELECT pg_sleep(1)",
        _ => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000) \
             SELECT count(*) FROM n"
        }
    };
    let timed_out = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        cut.query_one_raw(sql(slow)),
    )
    .await;
    assert!(timed_out.is_err(), "the slow statement ended within 100 ms");
    drop(cut);
    assert!(warm.is_empty(), "kept after a statement dropped half-way");

    // At most half the pool, and none idle past WARM_IDLE.
    let many: Vec<_> = (0..max / 2 + 3)
        .map(|_| query::OneConnection::warm(&t.db, &warm))
        .collect();
    futures::future::try_join_all(many.iter().map(|c| c.query_one_raw(sql("SELECT 1"))))
        .await
        .unwrap();
    let kept_at = std::time::Instant::now();
    drop(many);
    assert_eq!(warm.len(), max / 2);
    while !warm.is_empty() {
        assert!(
            kept_at.elapsed() < std::time::Duration::from_secs(5),
            "still kept {:?} after WARM_IDLE",
            kept_at.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        kept_at.elapsed() >= query::WARM_IDLE,
        "given back before WARM_IDLE"
    );

    // While the pool has nothing to spare (another request may be waiting), a connection
    // goes back to it.
    let mut all: Vec<_> = (0..max)
        .map(|_| query::OneConnection::warm(&t.db, &warm))
        .collect();
    futures::future::try_join_all(all.iter().map(|c| c.query_one_raw(sql("SELECT 1"))))
        .await
        .unwrap();
    assert!(service::db::pool_saturated(&t.db));
    drop(all.pop());
    assert!(warm.is_empty(), "kept while the pool was saturated");
    drop(all);
    drop(warm);
    t.db.query_one_raw(sql("SELECT 1")).await.unwrap();
}

/// `query::find_conversation_with_thread` (the lookup and the thread page in one statement,
/// what `conversation(id:) { messages(..) }` runs) answers what `find_conversation` and then
/// `list_messages_batch` answer, for every window shape, filters matching some and none,
/// viewers who see the conversation and one who does not, and an unknown id.
async fn a_conversation_with_its_thread_in_one_statement_equals_the_two(t: &TestDb) {
    let s = Settings::default();
    let mut ids = Vec::new();
    for (c, n) in [(0u32, 7u32), (1, 1)] {
        for i in 0..n {
            let direction = if i % 3 == 1 {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let (from, to) = match direction {
                Direction::Inbound => (
                    format!("+1804555{:04}", 3000 + c),
                    "+12016661234".to_owned(),
                ),
                Direction::Outbound => (
                    "+12016661234".to_owned(),
                    format!("+1804555{:04}", 3000 + c),
                ),
            };
            // Two messages of the first thread share a minute: the page's ties go by id.
            let minute = if c == 0 && i == 4 { 3 } else { i };
            let r = record_message(
                &t.db,
                &s,
                sms(direction, &from, &to, &format!("c{c}m{i}"), minute),
            )
            .await
            .unwrap();
            if i == 0 {
                ids.push(r.conversation.unwrap().id);
            }
        }
    }
    let all = query::list_messages(
        &t.db,
        &service::Viewer::Everyone,
        MessageScope::Conversation(ids[0]),
        &MessageFilter::default(),
        &Window::new(
            service::cursor::CursorKind::Message,
            &PageRequest::default(),
            &s.limits,
        )
        .unwrap(),
    )
    .await
    .unwrap()
    .items;
    assert_eq!(all.len(), 7);
    let cursor = |i: usize| Some(query::message_cursor(&all[i]));
    let requests = [
        PageRequest::default(),
        PageRequest {
            first: Some(2),
            ..Default::default()
        },
        PageRequest {
            last: Some(3),
            ..Default::default()
        },
        PageRequest {
            first: Some(50),
            ..Default::default()
        },
        PageRequest {
            last: Some(50),
            ..Default::default()
        },
        PageRequest {
            first: Some(2),
            after: cursor(1),
            ..Default::default()
        },
        PageRequest {
            last: Some(2),
            before: cursor(6),
            ..Default::default()
        },
        PageRequest {
            first: Some(3),
            after: cursor(6),
            ..Default::default()
        },
    ];
    let filters = [
        MessageFilter::default(),
        MessageFilter {
            direction: Some(Direction::Inbound),
            ..Default::default()
        },
        MessageFilter {
            kind: Some(Kind::Mms),
            ..Default::default()
        },
    ];
    let viewers = [
        service::Viewer::Everyone,
        service::Viewer::Inboxes(vec!["+18045553000".to_owned()].into()),
        service::Viewer::Inboxes(vec!["+19995550000".to_owned()].into()),
    ];
    let mut compared = 0;
    for req in &requests {
        let w = Window::new(service::cursor::CursorKind::Message, req, &s.limits).unwrap();
        for f in &filters {
            for viewer in &viewers {
                for id in ids.iter().copied().chain([i64::MAX]) {
                    let one = query::find_conversation_with_thread(&t.db, viewer, id, f, &w)
                        .await
                        .unwrap();
                    let two = match query::find_conversation(&t.db, viewer, id).await.unwrap() {
                        None => None,
                        Some(c) => {
                            let mut pages = query::list_messages_batch(&t.db, &[id], f, &w)
                                .await
                                .unwrap();
                            Some((c, pages.remove(&id).unwrap()))
                        }
                    };
                    assert_eq!(one, two, "{req:?} {f:?} {viewer:?} {id}");
                    compared += usize::from(one.as_ref().is_some_and(|(_, p)| !p.items.is_empty()));
                }
            }
        }
    }
    // Not every comparison was of nothing: pages with messages were among them.
    assert!(compared > 20, "{compared}");
    // The second viewer sees the first conversation only, the third neither.
    let w = Window::new(
        service::cursor::CursorKind::Message,
        &PageRequest::default(),
        &s.limits,
    )
    .unwrap();
    let f = MessageFilter::default();
    assert!(
        query::find_conversation_with_thread(&t.db, &viewers[1], ids[1], &f, &w)
            .await
            .unwrap()
            .is_none()
    );
    let (c, page) = query::find_conversation_with_thread(&t.db, &viewers[1], ids[0], &f, &w)
        .await
        .unwrap()
        .expect("visible");
    assert_eq!((c.id, page.items.len()), (ids[0], 7));
    assert!(
        query::find_conversation_with_thread(&t.db, &viewers[2], ids[0], &f, &w)
            .await
            .unwrap()
            .is_none()
    );
}
