//! The harness's own decisions: where PostgreSQL's server programs are found, and when a
//! test that cannot run is skipped or fails.

use std::fs;
use std::path::{Path, PathBuf};

use parley_tests::{ci_flag, find_postgres_bindir, postgres_version};

/// A fake `bin` folder holding `programs` (empty files) under `root/rel`.
fn bin_with(root: &Path, rel: &str, programs: &[&str]) -> PathBuf {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).unwrap();
    for p in programs {
        fs::write(dir.join(p), "").unwrap();
    }
    dir
}

#[test]
fn postgres_versions_order_numerically_not_as_text() {
    assert_eq!(postgres_version("15"), Some(vec![15]));
    assert_eq!(postgres_version("9.6"), Some(vec![9, 6]));
    assert_eq!(postgres_version("main"), None);
    assert_eq!(postgres_version(""), None);
    assert!(postgres_version("9.6") < postgres_version("10"));
    assert!(postgres_version("15") < postgres_version("16"));
}

#[test]
fn the_newest_installed_server_is_found_when_pg_config_is_absent() {
    let root = tempfile::tempdir().unwrap();
    bin_with(root.path(), "9.6/bin", &["initdb", "pg_ctl"]);
    let v15 = bin_with(root.path(), "15/bin", &["initdb", "pg_ctl"]);
    // A newer version with only the client programs installed is not a server.
    bin_with(root.path(), "17/bin", &["psql"]);
    bin_with(root.path(), "common/bin", &["initdb", "pg_ctl"]);
    assert_eq!(find_postgres_bindir(None, root.path()), Ok(v15.clone()));
    let v16 = bin_with(root.path(), "16/bin", &["initdb", "pg_ctl"]);
    assert_eq!(find_postgres_bindir(None, root.path()), Ok(v16));
}

#[test]
fn pg_config_wins_when_it_names_a_server_and_is_passed_over_when_not() {
    let root = tempfile::tempdir().unwrap();
    let debian = bin_with(root.path(), "lib/postgresql/14/bin", &["initdb", "pg_ctl"]);
    let versions = root.path().join("lib/postgresql");
    let own = bin_with(root.path(), "opt/pg/bin", &["initdb", "pg_ctl"]);
    assert_eq!(
        find_postgres_bindir(Some(own), &versions),
        Ok(root.path().join("opt/pg/bin"))
    );
    let client_only = bin_with(root.path(), "usr/bin", &["pg_config", "psql"]);
    assert_eq!(
        find_postgres_bindir(Some(client_only), &versions),
        Ok(debian)
    );
}

#[test]
fn no_server_installed_is_an_error_naming_where_it_looked() {
    let root = tempfile::tempdir().unwrap();
    let client_only = bin_with(root.path(), "usr/bin", &["psql"]);
    let versions = root.path().join("lib/postgresql");
    let err = find_postgres_bindir(Some(client_only.clone()), &versions).unwrap_err();
    assert_eq!(
        err,
        format!(
            "no PostgreSQL server programs (initdb, pg_ctl) in {} (from pg_config --bindir) or {}/<version>/bin",
            client_only.display(),
            versions.display()
        )
    );
}

#[test]
fn ci_is_recognized_from_its_usual_values() {
    assert!(ci_flag(Some("true")));
    assert!(ci_flag(Some("1")));
    assert!(ci_flag(Some("yes")));
    assert!(!ci_flag(None));
    assert!(!ci_flag(Some("")));
    assert!(!ci_flag(Some("0")));
    assert!(!ci_flag(Some("false")));
}

#[test]
fn installed_postgres_server_programs_are_found() {
    // In CI PostgreSQL is installed (the storage tests need it), so the outage test's
    // cluster must be found there whatever its version.
    match parley_tests::postgres_bindir() {
        Ok(bin) => {
            assert!(bin.join("initdb").is_file(), "{}", bin.display());
            assert!(bin.join("pg_ctl").is_file(), "{}", bin.display());
        }
        Err(why) => parley_tests::skip_or_fail("finding PostgreSQL's server programs", &why),
    }
}
