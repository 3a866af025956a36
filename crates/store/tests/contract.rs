//! The store's contract, run against every database it speaks: SQLite always,
//! PostgreSQL whenever one is reachable (`VITRINE_TEST_POSTGRES`, by default
//! `postgres://postgres@127.0.0.1:5432/test`; required when `CI` is set).
//! Each PostgreSQL test creates a database of its own and drops it after.
//!
//! So far the registry (issue 12 moves the ledger, the log and usage over
//! next, and their contracts with them).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use domain::{
    AccountName, Amount, ApiKey, Description, Dim, Dtype, License, Sha256, Tags, Task, TensorSpec, Visibility,
};
use sqlx::{Connection, PgConnection};
use store::{Account, Cursor, ModelFilter, ModelPatch, ModelSort, NewModel, QuotaExceeded, Store, StoreError};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs `test` against a fresh SQLite store, then a fresh PostgreSQL one.
async fn on_every_database<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let folder = tempfile::tempdir().expect("a temporary folder");
    let sqlite = Store::open(&folder.path().join("vitrine.sqlite")).await.expect("open SQLite");
    test(sqlite.clone()).await;
    sqlite.close().await;

    let Some(database) = TestDatabase::create().await else { return };
    let postgres = Store::open_postgres(&database.url).await.expect("open PostgreSQL");
    assert!(postgres.is_postgres());
    test(postgres.clone()).await;
    postgres.close().await;
    database.drop().await;
}

/// A database of one test on the PostgreSQL server.
struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> Option<TestDatabase> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = std::env::var("VITRINE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned());
        let mut admin = match PgConnection::connect(&server).await {
            Ok(connection) => connection,
            Err(error) if std::env::var_os("CI").is_none() => {
                eprintln!("PostgreSQL at {server} is not reachable ({error}): SQLite only");
                return None;
            }
            Err(error) => panic!("CI runs the store's contract on PostgreSQL, and {server} is not reachable: {error}"),
        };
        let name = format!("vitrine_contract_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(TestDatabase { server, name, url })
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(&self.server).await.expect("reconnect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await
            .expect("drop the test database");
    }
}

fn name(text: &str) -> AccountName {
    AccountName::parse_new(text).expect("an account name")
}

async fn account(store: &Store, text: &str) -> Account {
    store.create_account(&name(text), false, &ApiKey::generate()).await.expect("an account")
}

fn new_model(text: &str, task: Task, visibility: Visibility, description: &str, tags: &[&str]) -> NewModel {
    NewModel {
        name: text.parse().expect("a model name"),
        description: Description::parse(description).expect("a description"),
        task,
        license: License::parse("MIT").expect("a license"),
        tags: Tags::parse(tags).expect("tags"),
        visibility,
        price_per_inference: Amount::from_minor_units(1_000).expect("a price"),
    }
}

fn public(text: &str) -> NewModel {
    new_model(text, Task::Regression, Visibility::Public, "", &[])
}

fn specs() -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let spec = |name: &str| TensorSpec {
        name: name.into(),
        dtype: Dtype::F32,
        shape: vec![Dim::Symbol("N".into()), Dim::Fixed(4)],
    };
    (vec![spec("x")], vec![spec("y")])
}

fn digest(text: &str) -> Sha256 {
    Sha256::digest(text.as_bytes())
}

async fn upload(store: &Store, model_id: i64, file: &str, size: u64, quota: Option<u64>) -> Result<i64, QuotaExceeded> {
    let (inputs, outputs) = specs();
    store
        .add_version(model_id, &digest(file), size, &inputs, &outputs, quota)
        .await
        .expect("add a version")
        .map(|v| v.version)
}

#[tokio::test]
async fn accounts_and_keys() {
    on_every_database(|store| async move {
        let key = ApiKey::generate();
        let created = store.create_account(&name("alice"), true, &key).await.expect("create");
        assert!(created.is_operator);
        let again = store.create_account(&name("alice"), false, &ApiKey::generate()).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let found = store.account_for_key(&key).await.expect("lookup").expect("the key's account");
        assert_eq!(found, created);
        assert_eq!(store.account_for_key(&ApiKey::generate()).await.expect("lookup"), None);
        assert_eq!(store.account_by_name(&name("alice")).await.expect("by name"), Some(created));
        assert_eq!(store.account_by_name(&name("nobody")).await.expect("by name"), None);
        let bob = account(&store, "bob").await;
        assert!(!bob.is_operator);
        assert_eq!(store.counts().await.expect("counts").0, 2);
    })
    .await;
}

#[tokio::test]
async fn models_are_created_once_and_patched_field_by_field() {
    on_every_database(|store| async move {
        let owner = account(&store, "owner").await;
        let model = store.create_model(&owner, &public("lin")).await.expect("create");
        assert_eq!((model.owner.as_str(), model.name.as_str(), model.latest_version), ("owner", "lin", None));
        assert!(model.listed && model.deleted_at_ms.is_none() && model.takedown.is_none());
        let again = store.create_model(&owner, &public("lin")).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let patch = ModelPatch {
            price_per_inference: Some(Amount::from_minor_units(7).expect("a price")),
            listed: Some(false),
            tags: Some(Tags::parse(&["vision", "small"]).expect("tags")),
            ..ModelPatch::default()
        };
        store.update_model(model.id, &patch).await.expect("patch");
        let patched = store.model(&owner.name, &model.name).await.expect("read").expect("the model");
        assert_eq!(patched.price_per_inference.minor_units(), 7);
        assert!(!patched.listed);
        assert_eq!(patched.tags.as_slice(), ["vision", "small"]);
        assert_eq!(patched.description, model.description, "fields not in the patch stay");
        store.update_model(model.id, &ModelPatch { listed: Some(true), ..ModelPatch::default() }).await.expect("patch");
        assert!(store.model(&owner.name, &model.name).await.expect("read").expect("the model").listed);
    })
    .await;
}

#[tokio::test]
async fn listings_filter_and_page_the_same_on_every_database() {
    on_every_database(|store| async move {
        let owner = account(&store, "owner").await;
        let other = account(&store, "other").await;
        let mut names = vec![];
        for i in 0..7 {
            let text = format!("model-{i}");
            let (task, tags) = if i % 2 == 0 { (Task::Regression, vec!["even"]) } else { (Task::Embedding, vec![]) };
            store.create_model(&owner, &new_model(&text, task, Visibility::Public, "", &tags)).await.expect("model");
            names.push(text);
        }
        let private = new_model("secret", Task::Regression, Visibility::Private, "100%_sure", &[]);
        store.create_model(&other, &private).await.expect("private model");
        let unlisted = store.create_model(&other, &public("unlisted")).await.expect("unlisted");
        store
            .update_model(unlisted.id, &ModelPatch { listed: Some(false), ..ModelPatch::default() })
            .await
            .expect("unlist");
        let down = store.create_model(&other, &public("down")).await.expect("down");
        store.set_takedown(down.id, Some("a complaint")).await.expect("take down");
        let gone = store.create_model(&other, &public("gone")).await.expect("gone");
        store.delete_model(gone.id).await.expect("delete");

        let list = |filter: ModelFilter, sort: ModelSort, after: Option<Cursor>, limit: u32| {
            let store = store.clone();
            async move {
                let (models, next) = store.list_models(&filter, sort, after.as_ref(), limit).await.expect("list");
                (models.iter().map(|m| m.name.as_str().to_owned()).collect::<Vec<_>>(), next)
            }
        };
        // Anyone: the seven public ones, newest first, three a page.
        let mut seen = vec![];
        let mut after = None;
        loop {
            let (page, next) = list(ModelFilter::default(), ModelSort::Recent, after, 3).await;
            assert!(page.len() <= 3);
            seen.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, names.iter().rev().cloned().collect::<Vec<_>>());
        // By name, two a page.
        let mut seen = vec![];
        let mut after = None;
        loop {
            let (page, next) = list(ModelFilter::default(), ModelSort::Name, after, 2).await;
            seen.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, names);
        // The owner of the hidden ones sees their private, unlisted and
        // taken-down models; never a deleted one.
        let mine = ModelFilter { owner: Some(other.name.clone()), viewer_id: Some(other.id), ..ModelFilter::default() };
        let (page, _) = list(mine, ModelSort::Name, None, 50).await;
        assert_eq!(page, ["down", "secret", "unlisted"]);
        let by_task = ModelFilter { task: Some(Task::Embedding), ..ModelFilter::default() };
        assert_eq!(list(by_task, ModelSort::Name, None, 50).await.0, ["model-1", "model-3", "model-5"]);
        let by_tag = ModelFilter { query: Some("EVEN".into()), ..ModelFilter::default() };
        assert_eq!(list(by_tag, ModelSort::Name, None, 50).await.0, ["model-0", "model-2", "model-4", "model-6"]);
        // A search is a plain substring: `%` and `_` match only themselves.
        let literal = ModelFilter { query: Some("0%_s".into()), viewer_id: Some(other.id), ..ModelFilter::default() };
        assert_eq!(list(literal, ModelSort::Name, None, 50).await.0, ["secret"]);
        let wildcard = ModelFilter { query: Some("%".into()), ..ModelFilter::default() };
        assert!(list(wildcard, ModelSort::Name, None, 50).await.0.is_empty());
        let nobody =
            ModelFilter { query: Some("model-1".into()), owner: Some(name("nobody")), ..ModelFilter::default() };
        assert!(list(nobody, ModelSort::Name, None, 50).await.0.is_empty());
    })
    .await;
}

#[tokio::test]
async fn versions_are_numbered_in_order_even_when_uploaded_at_once() {
    on_every_database(|store| async move {
        let owner = account(&store, "owner").await;
        let model = store.create_model(&owner, &public("lin")).await.expect("model");
        assert_eq!(upload(&store, model.id, "first", 10, None).await, Ok(1));
        let uploads = (0..8).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { upload(&store, model.id, &format!("file {i}"), 10, None).await })
        });
        let mut numbers = vec![];
        for upload in uploads {
            numbers.push(upload.await.expect("an upload task").expect("under no quota"));
        }
        numbers.sort();
        assert_eq!(numbers, (2..=9).collect::<Vec<_>>());
        let versions = store.versions(model.id).await.expect("versions");
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
        let first = store.version(model.id, 1).await.expect("version").expect("version 1");
        assert_eq!((first.blob_sha256, first.size_bytes), (digest("first"), 10));
        assert_eq!((first.inputs, first.outputs), specs());
        assert_eq!(store.version(model.id, 10).await.expect("version"), None);
        let read = store.model(&owner.name, &model.name).await.expect("read").expect("model");
        assert_eq!(read.latest_version, Some(9));
    })
    .await;
}

#[tokio::test]
async fn the_storage_quota_counts_each_file_once_and_holds_under_concurrent_uploads() {
    on_every_database(|store| async move {
        let owner = account(&store, "owner").await;
        let a = store.create_model(&owner, &public("a")).await.expect("model a");
        let b = store.create_model(&owner, &public("b")).await.expect("model b");
        assert_eq!(upload(&store, a.id, "one", 60, Some(100)).await, Ok(1));
        // The same file again, in another model: no more room taken.
        assert_eq!(upload(&store, b.id, "one", 60, Some(100)).await, Ok(1));
        assert_eq!(store.storage_used(owner.id).await.expect("used"), 60);
        let refused = upload(&store, b.id, "two", 41, Some(100)).await;
        assert_eq!(refused, Err(QuotaExceeded { used_bytes: 60, adding_bytes: 41, max_bytes: 100 }));
        // Two uploads at once into two models, each fitting alone, not both.
        let racing = [(a.id, "three"), (b.id, "four")].map(|(model, file)| {
            let store = store.clone();
            tokio::spawn(async move { upload(&store, model, file, 30, Some(100)).await })
        });
        let mut accepted = 0;
        for upload in racing {
            accepted += usize::from(upload.await.expect("an upload task").is_ok());
        }
        assert_eq!(accepted, 1, "the quota let both uploads in");
        assert_eq!(store.storage_used(owner.id).await.expect("used"), 90);
    })
    .await;
}

#[tokio::test]
async fn a_models_life_yank_quarantine_takedown_delete() {
    on_every_database(|store| async move {
        let owner = account(&store, "owner").await;
        let model = store.create_model(&owner, &public("lin")).await.expect("model");
        let private = store
            .create_model(&owner, &new_model("own", Task::Other, Visibility::Private, "", &[]))
            .await
            .expect("private");
        upload(&store, model.id, "v1", 10, None).await.expect("v1");
        upload(&store, model.id, "v2", 10, None).await.expect("v2");
        upload(&store, private.id, "p1", 10, None).await.expect("p1");
        let latest = |store: Store| async move {
            store
                .model(&name("owner"), &"lin".parse().expect("name"))
                .await
                .expect("read")
                .expect("model")
                .latest_version
        };

        assert!(store.set_yank(model.id, 2, Some("broken")).await.expect("yank"));
        let yanked = store.version(model.id, 2).await.expect("read").expect("v2").yank.expect("a yank");
        assert_eq!(yanked.reason, "broken");
        assert_eq!(latest(store.clone()).await, Some(1), "latest skips a yanked version");
        assert!(store.set_yank(model.id, 2, Some("still broken")).await.expect("yank again"));
        let again = store.version(model.id, 2).await.expect("read").expect("v2").yank.expect("a yank");
        assert_eq!((again.since_ms, again.reason.as_str()), (yanked.since_ms, "still broken"));
        assert!(store.set_yank(model.id, 2, None).await.expect("unyank"));
        assert_eq!(store.version(model.id, 2).await.expect("read").expect("v2").yank, None);
        assert!(!store.set_yank(model.id, 3, Some("no such version")).await.expect("yank"));

        assert!(store.quarantine_version(model.id, 1, "crashed its worker", 1_000).await.expect("quarantine"));
        assert!(store.quarantine_version(model.id, 1, "a second reason", 2_000).await.expect("again"));
        let listed = store.quarantined_versions().await.expect("quarantined");
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].model.as_str(), listed[0].version), ("lin", 1));
        assert_eq!(
            (listed[0].quarantine.reason.as_str(), listed[0].quarantine.since_ms),
            ("crashed its worker", 1_000)
        );
        assert!(store.lift_quarantine(model.id, 1).await.expect("lift"));
        assert!(!store.lift_quarantine(model.id, 1).await.expect("lift again"));
        assert!(store.quarantined_versions().await.expect("quarantined").is_empty());

        assert!(store.blob_visible(&digest("v1"), None).await.expect("visible"));
        assert!(!store.blob_visible(&digest("p1"), None).await.expect("visible"), "a private model's file");
        assert!(store.blob_visible(&digest("p1"), Some(owner.id)).await.expect("visible"));
        store.set_takedown(model.id, Some("a complaint")).await.expect("take down");
        let down = store.model(&owner.name, &model.name).await.expect("read").expect("model");
        assert_eq!(down.takedown.map(|t| t.reason).as_deref(), Some("a complaint"));
        assert!(!store.blob_visible(&digest("v1"), None).await.expect("visible"), "a taken-down model's file");
        store.set_takedown(model.id, None).await.expect("restore");
        assert_eq!(store.model(&owner.name, &model.name).await.expect("read").expect("model").takedown, None);

        let mut files = store.delete_model(model.id).await.expect("delete");
        files.sort();
        let mut expected = vec![digest("v1"), digest("v2")];
        expected.sort();
        assert_eq!(files, expected);
        assert!(store.model(&owner.name, &model.name).await.expect("read").expect("kept").deleted_at_ms.is_some());
        assert!(!store.blob_in_use(&digest("v1")).await.expect("in use"));
        assert!(store.blob_in_use(&digest("p1")).await.expect("in use"));
        assert!(!store.blob_visible(&digest("v1"), Some(owner.id)).await.expect("visible"));
        assert_eq!(store.storage_used(owner.id).await.expect("used"), 10, "a deleted model stores nothing");
        assert_eq!(store.counts().await.expect("counts"), (1, 2, 3, 3));
    })
    .await;
}

#[tokio::test]
async fn nodes_keep_their_first_key_and_checkpoints_are_kept_once_per_size() {
    on_every_database(|store| async move {
        store.register_node("node-a", &[1; 32]).await.expect("register");
        store.register_node("node-a", &[1; 32]).await.expect("register again, the same key");
        let other = store.register_node("node-a", &[2; 32]).await;
        assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
        store.register_node("node-b", &[3; 32]).await.expect("register");
        assert_eq!(
            store.node_keys().await.expect("keys"),
            [("node-a".into(), vec![1; 32]), ("node-b".into(), vec![3; 32])]
        );

        assert_eq!(store.tree_size().await.expect("size"), 0);
        assert_eq!(store.latest_checkpoint().await.expect("latest"), None);
        for size in [1u64, 5, 3] {
            let checkpoint = store::StoredCheckpoint { size, root: [size as u8; 32], note: format!("note {size}") };
            store.insert_checkpoint(&checkpoint).await.expect("insert");
        }
        // Two nodes signing one size: the first note stays.
        let late = store::StoredCheckpoint { size: 5, root: [9; 32], note: "another".into() };
        store.insert_checkpoint(&late).await.expect("insert again");
        let latest = store.latest_checkpoint().await.expect("latest").expect("a checkpoint");
        assert_eq!((latest.size, latest.root, latest.note.as_str()), (5, [5; 32], "note 5"));
        let sizes: Vec<u64> = store.checkpoints(Some(5), 10).await.expect("list").iter().map(|(c, _)| c.size).collect();
        assert_eq!(sizes, [3, 1]);
        assert_eq!(store.checkpoints(None, 1).await.expect("list").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn labels_name_every_model_for_the_stats() {
    on_every_database(|store| async move {
        let owner = account(&store, "owner").await;
        let listed = store.create_model(&owner, &public("lin")).await.expect("model");
        let private = new_model("own", Task::Embedding, Visibility::Private, "", &[]);
        let private = store.create_model(&owner, &private).await.expect("model");
        upload(&store, listed.id, "v1", 10, None).await.expect("v1");
        let labels = store.model_labels().await.expect("labels");
        let lin = &labels[&listed.id];
        assert_eq!((lin.owner.as_str(), lin.name.as_str(), lin.public, lin.has_version), ("owner", "lin", true, true));
        assert_eq!((lin.task.as_str(), lin.price), ("regression", 1_000));
        let own = &labels[&private.id];
        assert_eq!((own.public, own.has_version, own.task.as_str()), (false, false, "embedding"));
        assert_eq!(store.account_names().await.expect("names")[&owner.id], "owner");
        assert_eq!(store.usage_event_count().await.expect("count"), 0);
    })
    .await;
}
