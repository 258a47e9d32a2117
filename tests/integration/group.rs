//! Group commit (issue 17): concurrent writers to one conversation are stored together,
//! a transaction per group, and each still gets its own sequence, replay check and answer.

use std::collections::{HashMap, HashSet};

use parley_tests::{AppConfig, TestDb, on_both_engines, prometheus_value};
use serde_json::{Value, json};

on_both_engines!(a_burst_with_replays_is_stored_in_groups_and_answered_one_by_one);

const RECORD: &str = r#"
mutation Record($input: RecordMessageInput!) {
  recordMessage(input: $input) {
    duplicate
    message { id sequence body }
    conversation { id messageCount lastSequence }
  }
}"#;

fn grouped(text: &str) -> f64 {
    prometheus_value(text, "parley_record_grouped_messages_total", &[]).unwrap_or(0.0)
}

/// 200 writers at once into one conversation; every tenth replays the provider id of the
/// writer before it, so some groups hold a replay (and are stored one by one) while the
/// rest commit together.
async fn a_burst_with_replays_is_stored_in_groups_and_answered_one_by_one(t: &TestDb) {
    let app = t.app(AppConfig::default());
    let before = grouped(&app.get("/metrics").await.text);
    let pid = |i: usize| {
        if i % 10 == 9 {
            format!("p{}", i - 1)
        } else {
            format!("p{i}")
        }
    };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            let body = json!({ "query": RECORD, "variables": { "input": {
                "channel": "SMS", "direction": if i % 2 == 0 { "OUTBOUND" } else { "INBOUND" },
                "from": if i % 2 == 0 { "+12015550101" } else { "+18045550199" },
                "to": [if i % 2 == 0 { "+18045550199" } else { "+12015550101" }],
                "body": format!("m{i}"), "providerMessageId": pid(i),
            }}});
            tokio::spawn(async move { app.post_json("/graphql", &body).await.json })
        })
        .collect();
    let mut answers: Vec<Value> = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert!(answer.get("errors").is_none(), "{answer:#}");
        answers.push(answer["data"]["recordMessage"].clone());
    }

    // 180 distinct provider ids: 180 messages, numbered 1..180 once each, in one
    // conversation whose count is exact.
    let mut by_pid: HashMap<String, Vec<&Value>> = HashMap::new();
    for (i, a) in answers.iter().enumerate() {
        by_pid.entry(pid(i)).or_default().push(a);
    }
    assert_eq!(by_pid.len(), 180);
    let mut sequences = HashSet::new();
    let mut conversations = HashSet::new();
    for (pid, answers) in &by_pid {
        let ids: HashSet<&str> = answers
            .iter()
            .map(|a| a["message"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "{pid}: a replay is answered with the original"
        );
        let new: Vec<_> = answers
            .iter()
            .filter(|a| a["duplicate"] == json!(false))
            .collect();
        assert_eq!(
            new.len(),
            1,
            "{pid}: stored once, the other answer a replay"
        );
        let a = new[0];
        let sequence = a["message"]["sequence"].as_i64().unwrap();
        assert!(
            sequences.insert(sequence),
            "sequence {sequence} given twice"
        );
        // The conversation as of the message's own write: its count and last sequence
        // are the message's number, as if the messages had been recorded one by one.
        assert_eq!(a["conversation"]["lastSequence"].as_i64(), Some(sequence));
        assert_eq!(a["conversation"]["messageCount"].as_i64(), Some(sequence));
        conversations.insert(a["conversation"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sequences, (1..=180).collect::<HashSet<i64>>());
    assert_eq!(conversations.len(), 1);
    assert_eq!(t.count("messages").await, 180);

    // Some of the burst was committed in groups of two or more.
    let after = grouped(&app.get("/metrics").await.text);
    assert!(
        after >= before + 2.0,
        "no group of two or more was committed: {before} -> {after}"
    );
}
