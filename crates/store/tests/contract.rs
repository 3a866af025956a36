//! The store's contract, run against every database it speaks: SQLite always,
//! PostgreSQL whenever one is reachable (`VITRINE_TEST_POSTGRES`, by default
//! `postgres://postgres@127.0.0.1:5432/test`; required when `CI` is set).
//! Each PostgreSQL test creates a database of its own and drops it after.
//!
//! The registry, the ledger's batches, the log and usage; the server's
//! tests run every route on SQLite.

use std::future::Future;

use domain::{
    AccountName, Amount, ApiKey, Description, Dim, Dtype, License, Sha256, Tags, Task, TensorSpec, Visibility,
};
use ledger::{Command, Hold, LedgerError, Leg, Transfer, TransferKind};
use store::postgres::TestDatabase;
use store::{
    Account, AccountKind, BatchItem, Charge, Cursor, Dimension, GrantRequest, IdempotencyAnswer, IdempotencyStart,
    ItemError, ModelFilter, ModelPatch, ModelSort, NewModel, NewVersion, PayoutChange, PayoutState, QuotaExceeded,
    RollupQuery, Store, StoreError, UsageEvent,
};
use store::{AutoPayout, ChainDeposits, ChainPayoutRequest, ChainPayoutState, PayoutTransaction};
use store::{BlobStore, BlobStoreError, TestBucket};
use store::{ChainPayment, PaymentKey, PaymentState};

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

    let Some(database) = TestDatabase::create("contract").await else { return };
    let postgres = Store::open_postgres(&database.url).await.expect("open PostgreSQL");
    assert!(postgres.is_postgres());
    test(postgres.clone()).await;
    postgres.close().await;
    database.drop().await;
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
        .add_version(
            model_id,
            &NewVersion {
                blob_sha256: &digest(file),
                size_bytes: size,
                inputs: &inputs,
                outputs: &outputs,
                engine: "tract",
            },
            quota,
        )
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
        assert_eq!((first.inputs, first.outputs, first.engine.as_str()), (specs().0, specs().1, "tract"));
        // Each version keeps the engine that validated it.
        let (inputs, outputs) = specs();
        let other = store
            .add_version(
                model.id,
                &NewVersion {
                    blob_sha256: &digest("on another engine"),
                    size_bytes: 10,
                    inputs: &inputs,
                    outputs: &outputs,
                    engine: "onnxruntime",
                },
                None,
            )
            .await
            .expect("add a version")
            .expect("under no quota");
        assert_eq!(other.engine, "onnxruntime");
        let read = store.version(model.id, other.version).await.expect("version").expect("the new version");
        assert_eq!(read.engine, "onnxruntime");
        assert_eq!(store.version(model.id, 11).await.expect("version"), None);
        let read = store.model(&owner.name, &model.name).await.expect("read").expect("model");
        assert_eq!(read.latest_version, Some(10));
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

fn tokens(units: u64) -> Amount {
    Amount::from_minor_units(units).expect("an amount")
}

fn usage(model_id: i64, owner_id: i64, caller: u8, app: &str, price: u64, status: &str, at_ms: i64) -> UsageEvent {
    UsageEvent {
        created_at_ms: at_ms,
        model_id,
        version: 1,
        owner_id,
        task: "regression".into(),
        public: true,
        caller: [caller; 32],
        app: app.into(),
        node: "node-a".into(),
        price,
        creator_share: price * 8 / 10,
        latency_us: 1_000,
        cpu_us: 500,
        status: status.into(),
    }
}

/// A market: issuer, treasury, a node, a creator with a model and a caller
/// holding 1,000 tokens.
struct Market {
    treasury: Account,
    node: Account,
    creator: Account,
    caller: Account,
    model_id: i64,
}

async fn market(store: &Store) -> Market {
    let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("issuer");
    let treasury =
        store.ensure_system_account(&AccountName::treasury(), AccountKind::Treasury).await.expect("treasury");
    let node_name = AccountName::node("a").expect("a node account name");
    let node = store.ensure_system_account(&node_name, AccountKind::Node).await.expect("node");
    let again = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("again");
    assert_eq!(again, issuer);
    let creator = account(store, "creator").await;
    let caller = account(store, "caller").await;
    let model_id = store.create_model(&creator, &public("lin")).await.expect("model").id;
    let deposit = Transfer {
        debit: issuer.id,
        credit: caller.id,
        amount: tokens(1_000),
        kind: TransferKind::Deposit,
        reference: "wire 1".into(),
    };
    let once = BatchItem::command(Command::Once { id: "wire-1".into(), transfer: deposit });
    let outcomes = store.apply_batch(std::slice::from_ref(&once)).await.expect("deposit");
    assert!(!outcomes[0].as_ref().expect("deposited").replayed);
    // The same outside id again moves nothing and answers the original.
    let outcomes = store.apply_batch(&[once]).await.expect("deposit again");
    let replayed = outcomes[0].as_ref().expect("replayed");
    assert!(replayed.replayed);
    assert_eq!(replayed.transfers[0].amount, tokens(1_000));
    Market { treasury, node, creator, caller, model_id }
}

fn charge(market: &Market, price: u64, leaf: &str, key: Option<&str>) -> BatchItem {
    let leg = |credit: i64, amount: u64, kind| Transfer {
        debit: market.caller.id,
        credit,
        amount: tokens(amount),
        kind,
        reference: leaf.into(),
    };
    BatchItem::Charge(Charge {
        transfers: vec![
            leg(market.creator.id, price * 8 / 10, TransferKind::InferenceCreator),
            leg(market.node.id, price / 10, TransferKind::InferenceNode),
            leg(market.treasury.id, price / 10, TransferKind::InferenceTreasury),
        ],
        model_id: market.model_id,
        leaf: leaf.as_bytes().to_vec(),
        signature: vec![7; 64],
        usage: usage(market.model_id, market.creator.id, 1, "app-a", price, "ok", 1_700_000_000_000),
        answer: key.map(|key| IdempotencyAnswer {
            account_id: market.caller.id,
            key: key.into(),
            request: digest(key),
            // This key stands for an answer too large to keep.
            response: (key != "key-too-large").then(|| format!("answer of {key}")),
        }),
        at_ms: None,
        grant: None,
        release: None,
        payment: None,
    })
}

#[tokio::test]
async fn a_payment_on_the_chain_is_claimed_once_and_credited_once() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("issuer");
        let key = PaymentKey { network: "eip155:31337".into(), payer: "0xabc".into(), nonce: "0x01".into() };
        let payment = ChainPayment {
            key: key.clone(),
            amount: 100,
            valid_before: 2_000_000_000,
            state: PaymentState::Claimed,
            node: "node-a".into(),
            model_id: market.model_id,
            account_id: None,
            version: 1,
            creator_id: market.creator.id,
            shares: [80, 15, 5],
            tx_hash: None,
            log_index: None,
            created_at_ms: 1_700_000_000_000,
        };
        assert!(store.claim_chain_payment(&payment).await.expect("claim"));
        // The same authorization again, on any node: refused.
        let elsewhere = ChainPayment { node: "node-b".into(), ..payment.clone() };
        assert!(!store.claim_chain_payment(&elsewhere).await.expect("claim again"));

        // Paid from the issuer, credited only once it is settling.
        let mut paid = charge(&market, 100, "paid leaf", None);
        if let BatchItem::Charge(charge) = &mut paid {
            charge.payment = Some(key.clone());
            for transfer in &mut charge.transfers {
                transfer.debit = issuer.id;
            }
        }
        let outcomes = store.apply_batch(std::slice::from_ref(&paid)).await.expect("a batch");
        assert!(matches!(outcomes[0], Err(ItemError::PaymentNotSettling)), "{:?}", outcomes[0]);
        assert_eq!(store.unfinished_chain_payments("node-a").await.expect("unfinished").len(), 1);
        assert!(store.chain_payment_settling(&key, Some("0xfeed")).await.expect("settling"));
        assert!(!store.chain_payment_settling(&key, Some("0xbeef")).await.expect("settling twice"), "one transaction");
        let outcomes = store.apply_batch(std::slice::from_ref(&paid)).await.expect("a batch");
        let log_index = outcomes[0].as_ref().expect("credited").log_index;
        let outcomes = store.apply_batch(std::slice::from_ref(&paid)).await.expect("a batch");
        assert!(matches!(outcomes[0], Err(ItemError::PaymentNotSettling)), "credited once: {:?}", outcomes[0]);

        let stored = store.chain_payment(&key).await.expect("read").expect("stored");
        assert_eq!(stored.state, PaymentState::Credited);
        assert_eq!(stored.tx_hash.as_deref(), Some("0xfeed"));
        assert_eq!(stored.log_index, log_index.map(|i| i as i64));
        assert!(store.unfinished_chain_payments("node-a").await.expect("unfinished").is_empty());
        let (_, earned) = store.balances(market.creator.id).await.expect("balances");
        assert_eq!(earned, 80);
        // What entered from the chain counts as entered.
        let totals = store.ledger_totals().await.expect("totals");
        assert_eq!((totals.deposited, totals.balances), (1_100, 1_100));

        // A claim voided settles nothing more.
        let other = PaymentKey { nonce: "0x02".into(), ..key.clone() };
        assert!(store.claim_chain_payment(&ChainPayment { key: other.clone(), ..payment }).await.expect("claim"));
        assert!(store.void_chain_payment(&other, PaymentState::Claimed).await.expect("void"));
        assert!(!store.chain_payment_settling(&other, Some("0xdead")).await.expect("settling a void one"));
        assert_eq!(store.chain_payment(&other).await.expect("read").expect("kept").state, PaymentState::Void);
    })
    .await;
}

#[tokio::test]
async fn a_payout_on_the_chain_is_signed_by_one_node_and_resolved_once_final() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let payouts =
            store.ensure_system_account(&AccountName::payouts(), AccountKind::Payouts).await.expect("payouts");
        let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("issuer");
        let network = "eip155:31337";
        let request = |amount: u64| BatchItem::Ledger {
            command: Command::Transfer(Transfer {
                debit: market.caller.id,
                credit: payouts.id,
                amount: tokens(amount),
                kind: TransferKind::PayoutRequest,
                reference: "payout".into(),
            }),
            payout: Some(PayoutChange::Request {
                account_id: market.caller.id,
                amount: tokens(amount),
                chain: Some(ChainPayoutRequest {
                    network: network.into(),
                    address: "0xc0ffee".into(),
                    token_amount: format!("{amount}000000000"),
                }),
            }),
        };
        let resolve = |payout_id: i64, to: PayoutState, onchain: bool| BatchItem::Ledger {
            command: Command::Transfer(Transfer {
                debit: payouts.id,
                credit: if to == PayoutState::Completed { issuer.id } else { market.caller.id },
                amount: tokens(100),
                kind: if to == PayoutState::Completed {
                    TransferKind::PayoutComplete
                } else {
                    TransferKind::PayoutReject
                },
                reference: "resolved".into(),
            }),
            payout: Some(PayoutChange::Resolve { payout_id, to, reference: "resolved".into(), onchain }),
        };
        let outcomes = store.apply_batch(&[request(100), request(100)]).await.expect("request");
        let ids: Vec<i64> =
            outcomes.iter().map(|o| o.as_ref().expect("requested").payout.as_ref().unwrap().id).collect();
        let unfinished = store.unfinished_chain_payouts(network).await.expect("unfinished");
        assert_eq!(
            unfinished.iter().map(|p| (p.payout_id, p.state)).collect::<Vec<_>>(),
            [(ids[0], ChainPayoutState::Requested), (ids[1], ChainPayoutState::Requested)]
        );
        assert!(store.unfinished_chain_payouts("eip155:1").await.expect("another network").is_empty());

        // Nobody completes it by hand, nor resolves it by a transaction before it is mined.
        let outcomes = store
            .apply_batch(&[
                resolve(ids[0], PayoutState::Completed, false),
                resolve(ids[0], PayoutState::Completed, true),
            ])
            .await
            .expect("resolve");
        assert!(outcomes.iter().all(|o| matches!(o, Err(ItemError::PayoutNotRequested(_)))), "{outcomes:?}");

        // One node signs it, with its transaction stored.
        let signed = |hash: &str, fee: &str| PayoutTransaction {
            hash: hash.into(),
            raw: format!("0xraw{hash}"),
            max_fee: fee.into(),
            created_at_ms: store::now_ms(),
        };
        assert!(store.sign_chain_payout(ids[0], "node-a", 7, &signed("0x01", "10")).await.expect("sign"));
        assert!(!store.sign_chain_payout(ids[0], "node-b", 8, &signed("0x02", "10")).await.expect("sign twice"));
        // Signed, it is no longer the operator's to reject.
        let outcomes = store.apply_batch(&[resolve(ids[0], PayoutState::Rejected, false)]).await.expect("reject");
        assert!(matches!(outcomes[0], Err(ItemError::PayoutNotRequested(_))), "{outcomes:?}");
        // A fee bump by its node only; the same nonce, every hash kept.
        assert!(!store.bump_chain_payout(ids[0], "node-b", &signed("0x03", "20")).await.expect("bump elsewhere"));
        assert!(store.bump_chain_payout(ids[0], "node-a", &signed("0x04", "13")).await.expect("bump"));
        let payout = store.chain_payout(ids[0]).await.expect("read").expect("on the chain");
        assert_eq!(
            (payout.nonce, payout.node.as_deref(), payout.tx_hash.as_deref()),
            (Some(7), Some("node-a"), Some("0x04"))
        );
        assert_eq!(payout.transactions.iter().map(|t| t.hash.as_str()).collect::<Vec<_>>(), ["0x01", "0x04"]);
        assert_eq!(payout.transactions[0].raw, "0xraw0x01");
        let (mined, broadcast, signed_state) =
            (ChainPayoutState::Mined, ChainPayoutState::Broadcast, ChainPayoutState::Signed);
        assert!(store.move_chain_payout(ids[0], signed_state, broadcast, None).await.expect("sent"));
        assert!(!store.move_chain_payout(ids[0], signed_state, broadcast, None).await.expect("sent twice"));
        assert!(store.move_chain_payout(ids[0], broadcast, mined, Some(("0x01", 42))).await.expect("mined"));
        let payout = store.chain_payout(ids[0]).await.expect("read").expect("on the chain");
        assert_eq!((payout.state, payout.tx_hash.as_deref(), payout.block), (mined, Some("0x01"), Some(42)));

        // Final: resolved once, by its transaction.
        let outcomes = store
            .apply_batch(&[
                resolve(ids[0], PayoutState::Completed, true),
                resolve(ids[0], PayoutState::Completed, true),
            ])
            .await
            .expect("final");
        let done = outcomes[0].as_ref().expect("completed").payout.clone().expect("the payout");
        assert_eq!(done.state, PayoutState::Completed);
        assert!(matches!(outcomes[1], Err(ItemError::PayoutNotRequested(_))), "{outcomes:?}");
        assert_eq!(store.chain_payout(ids[0]).await.expect("read").expect("kept").state, ChainPayoutState::Final);
        assert_eq!(store.ledger_totals().await.expect("totals").paid_out, 100);

        // The other: rejected before it is signed, then nobody signs it.
        let outcomes = store.apply_batch(&[resolve(ids[1], PayoutState::Rejected, false)]).await.expect("reject");
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        assert!(
            !store.sign_chain_payout(ids[1], "node-a", 8, &signed("0x05", "10")).await.expect("sign a rejected one")
        );
        assert_eq!(store.chain_payout(ids[1]).await.expect("read").expect("kept").state, ChainPayoutState::Failed);
        assert!(store.unfinished_chain_payouts(network).await.expect("unfinished").is_empty());
        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!(caller.balance(), 900);

        // Automatic payouts: set, replaced, removed.
        let auto = |threshold: u64| AutoPayout {
            account_id: market.caller.id,
            network: network.into(),
            address: "0xc0ffee".into(),
            threshold,
            updated_at_ms: 1,
        };
        store.set_auto_payout(market.caller.id, Some(&auto(5))).await.expect("set");
        store.set_auto_payout(market.caller.id, Some(&auto(9))).await.expect("replace");
        assert_eq!(store.auto_payouts(network, None).await.expect("read"), [auto(9)]);
        assert_eq!(store.auto_payouts(network, Some(market.creator.id)).await.expect("read"), []);
        store.set_auto_payout(market.caller.id, None).await.expect("remove");
        assert!(store.auto_payouts(network, None).await.expect("read").is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_range_of_deposits_is_credited_with_its_cursor_once() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("issuer");
        let (network, token) = ("eip155:31337", "0x70ce");
        store.advance_chain_cursor(network, token, 10).await.expect("start");
        let credit = |log: u32, amount: u64| Command::Once {
            id: format!("chain:{network}:0xabc:{log}"),
            transfer: Transfer {
                debit: issuer.id,
                credit: market.creator.id,
                amount: tokens(amount),
                kind: TransferKind::Deposit,
                reference: format!("transfer 0xabc #{log}"),
            },
        };
        let range = |credits: Vec<Command>, from: u64, to: u64| {
            BatchItem::Deposits(ChainDeposits { credits, network: network.into(), token: token.into(), from, to })
        };
        let outcomes =
            store.apply_batch(&[range(vec![credit(0, 5), credit(1, 7)], 10, 20)]).await.expect("credit a range");
        assert_eq!(outcomes[0].as_ref().expect("credited").transfers.len(), 2);
        assert_eq!(store.chain_cursor(network, token).await.expect("cursor"), Some(20));
        // Read again (another node, a restart that lost its place): nothing moves.
        let outcomes = store.apply_batch(&[range(vec![credit(0, 5)], 10, 20)]).await.expect("again");
        assert!(matches!(outcomes[0], Err(ItemError::CursorMoved)), "{outcomes:?}");
        // A credit already applied, beside a new one: only the new one moves.
        let outcomes =
            store.apply_batch(&[range(vec![credit(1, 7), credit(2, 11)], 20, 25)]).await.expect("the next range");
        let transfers = &outcomes[0].as_ref().expect("credited").transfers;
        assert_eq!(transfers.iter().map(|t| t.amount).collect::<Vec<_>>(), [tokens(11)]);
        // An empty range moves the cursor alone.
        store.apply_batch(&[range(vec![], 25, 30)]).await.expect("empty")[0].as_ref().expect("moved");
        assert_eq!(store.chain_cursor(network, token).await.expect("cursor"), Some(30));
        let (creator, _) = store.balances(market.creator.id).await.expect("balances");
        assert_eq!(creator.balance(), 23);
    })
    .await;
}

#[tokio::test]
async fn a_paid_call_is_charged_logged_and_counted_in_one_batch() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let items = [
            charge(&market, 100, "leaf 0", Some("key-1")),
            charge(&market, 100, "leaf 1", None),
            // More than the caller has left: refused alone, the batch goes on.
            charge(&market, 900, "leaf x", None),
            // A failed call: logged too, charging nothing.
            BatchItem::RecordOnly {
                leaf: b"leaf f".to_vec(),
                signature: vec![0; 64],
                usage: usage(market.model_id, market.creator.id, 2, "app-b", 0, "model_failed", 1_700_000_000_000),
                answer: None,
                at_ms: None,
            },
        ];
        let outcomes = store.apply_batch(&items).await.expect("a batch");
        let logged: Vec<Option<u64>> = outcomes.iter().map(|o| o.as_ref().ok().and_then(|o| o.log_index)).collect();
        assert_eq!(logged, [Some(0), Some(1), None, Some(2)]);
        assert!(matches!(outcomes[2], Err(ItemError::Ledger(_))), "{:?}", outcomes[2]);
        assert_eq!(outcomes[0].as_ref().expect("charged").transfers.len(), 3);

        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!(caller.balance(), 800);
        let (_, earned) = store.balances(market.creator.id).await.expect("balances");
        assert_eq!(earned, 160);
        let totals = store.ledger_totals().await.expect("totals");
        assert_eq!((totals.debits, totals.credits, totals.deposited, totals.balances), (1_200, 1_200, 1_000, 1_000));
        let (page, next) = store.transfers_for(market.caller.id, None, 4).await.expect("transfers");
        assert_eq!(page.len(), 4);
        let (rest, end) = store.transfers_for(market.caller.id, next, 4).await.expect("transfers");
        assert_eq!((rest.len(), end), (3, None));
        assert_eq!(page[0].log_index, Some(1));

        // The log: three leaves (the refused charge has none), the root and
        // proofs the stored nodes give.
        assert_eq!(store.tree_size().await.expect("size"), 3);
        let entries = store.log_entries(0, 10).await.expect("entries");
        assert_eq!(
            entries.iter().map(|e| e.leaf.clone()).collect::<Vec<_>>(),
            [b"leaf 0".to_vec(), b"leaf 1".to_vec(), b"leaf f".to_vec()]
        );
        let mut tree = tlog::MemoryTree::new();
        entries.iter().for_each(|e| tree.append(tlog::leaf_hash(&e.leaf)));
        let root = store.log_root(3).await.expect("root");
        assert_eq!(root, tree.root());
        let proof = store.inclusion_proof(1, 3).await.expect("proof");
        assert!(tlog::verify_inclusion(&tlog::leaf_hash(b"leaf 1"), 1, 3, &proof, &root));

        // Usage: every call counted, paid or not.
        assert_eq!(store.usage_event_count().await.expect("events"), 3);
        let query = RollupQuery {
            dimension: Dimension::App,
            granularity: store::HOUR_MS,
            from_ms: 0,
            to_ms: i64::MAX,
            keys: None,
            include_private: false,
            detail: true,
        };
        let rollups = store.rollups(&query).await.expect("rollups");
        let app_a = rollups["app-a"].values().next().expect("a bucket");
        assert_eq!((app_a.calls, app_a.errors, app_a.revenue, app_a.creator_revenue), (2, 0, 200, 160));
        let app_b = rollups["app-b"].values().next().expect("a bucket");
        assert_eq!((app_b.calls, app_b.errors), (1, 1));
        let one = RollupQuery {
            dimension: Dimension::Model,
            keys: Some(vec![market.model_id.to_string()]),
            detail: false,
            ..query
        };
        let model = store.rollups(&one).await.expect("rollups");
        assert_eq!(model[&market.model_id.to_string()].values().map(|r| r.calls).sum::<u64>(), 3);
        assert_eq!(
            store.first_usage_day_ms().await.expect("first day"),
            Some(1_700_000_000_000 / store::DAY_MS * store::DAY_MS)
        );
        let by_app = store.model_usage_by_app(market.model_id, 0, i64::MAX).await.expect("by app");
        assert_eq!(by_app["app-a"], (2, 0, 200));
        assert_eq!(by_app["app-b"], (1, 1, 0));
        let earnings = store.earnings_by_app(market.creator.id, 0, i64::MAX, store::DAY_MS).await.expect("earnings");
        assert_eq!(earnings["app-a"].values().copied().collect::<Vec<_>>(), [(2, 160)]);
        let spent = store.spending(&[1; 32], false, 0, i64::MAX, store::DAY_MS).await.expect("spending");
        assert_eq!(spent["creator/lin"].values().copied().collect::<Vec<_>>(), [(2, 0, 200)]);
        let spent = store.spending(&[2; 32], true, 0, i64::MAX, store::DAY_MS).await.expect("spending");
        assert_eq!(spent["app-b"].values().copied().collect::<Vec<_>>(), [(1, 1, 0)]);

        // The key answered: a retry replays it, another request is refused,
        // and a second charge under the key (another node's) charges nothing.
        let replay =
            store.idempotency_lookup(market.caller.id, "key-1", &digest("key-1"), 60_000).await.expect("lookup");
        assert_eq!(replay, IdempotencyStart::Replay("answer of key-1".into(), Some(0)));
        let other =
            store.idempotency_lookup(market.caller.id, "key-1", &digest("other"), 60_000).await.expect("lookup");
        assert_eq!(other, IdempotencyStart::Mismatch);
        let fresh =
            store.idempotency_lookup(market.caller.id, "key-2", &digest("key-2"), 60_000).await.expect("lookup");
        assert_eq!(fresh, IdempotencyStart::Started);
        let outcomes = store.apply_batch(&[charge(&market, 100, "leaf 2", Some("key-1"))]).await.expect("a batch");
        assert!(matches!(outcomes[0], Err(ItemError::AlreadyAnswered)), "{:?}", outcomes[0]);
        assert_eq!(store.balances(market.caller.id).await.expect("balances").0.balance(), 800);
        assert_eq!(store.tree_size().await.expect("size"), 3);
        // One key twice in a batch: the first answers it, the second charges nothing.
        let twice = [charge(&market, 100, "leaf 2", Some("key-9")), charge(&market, 100, "leaf 3", Some("key-9"))];
        let outcomes = store.apply_batch(&twice).await.expect("a batch");
        assert_eq!(outcomes[0].as_ref().expect("charged").log_index, Some(3));
        assert!(matches!(outcomes[1], Err(ItemError::AlreadyAnswered)), "{:?}", outcomes[1]);
        assert_eq!(store.balances(market.caller.id).await.expect("balances").0.balance(), 700);
        // An answer not kept: the key is answered all the same, and says so.
        store.apply_batch(&[charge(&market, 10, "leaf 4", Some("key-too-large"))]).await.expect("a batch");
        let request = digest("key-too-large");
        let lookup = store.idempotency_lookup(market.caller.id, "key-too-large", &request, 60_000).await;
        assert_eq!(lookup.expect("lookup"), IdempotencyStart::NotKept(Some(4)));
        assert_eq!(store.purge_idempotency_keys(-60_000).await.expect("purge"), 3);
    })
    .await;
}

#[tokio::test]
async fn holds_reserve_post_and_expire_and_payouts_resolve_once() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let now = store::now_ms();
        let hold = |id: i64, amount: u64, expires_at_ms: i64| {
            BatchItem::command(Command::Reserve(Hold {
                id,
                account: market.caller.id,
                amount: tokens(amount),
                expires_at_ms,
            }))
        };
        let outcomes = store.apply_batch(&[hold(1, 300, now + 60_000), hold(2, 200, now - 1)]).await.expect("holds");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!((caller.balance(), caller.available()), (1_000, 500));
        let post = Command::Post {
            hold: 1,
            legs: vec![
                Leg { credit: market.creator.id, amount: tokens(200), kind: TransferKind::InferenceCreator },
                Leg { credit: market.treasury.id, amount: tokens(100), kind: TransferKind::InferenceTreasury },
            ],
            reference: "a call".into(),
        };
        let outcomes = store.apply_batch(&[BatchItem::command(post)]).await.expect("post");
        assert_eq!(outcomes[0].as_ref().expect("posted").transfers.len(), 2);
        assert_eq!(store.expired_holds(now).await.expect("expired"), [2]);
        assert_eq!(store.expire_holds(now).await.expect("expire"), 1);
        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!((caller.balance(), caller.available(), caller.debits_pending), (700, 700, 0));
        assert_eq!(store.ledger_totals().await.expect("totals").held, 0);

        let request = BatchItem::Ledger {
            command: Command::Transfer(Transfer {
                debit: market.creator.id,
                credit: store
                    .ensure_system_account(&AccountName::payouts(), AccountKind::Payouts)
                    .await
                    .expect("payouts")
                    .id,
                amount: tokens(150),
                kind: TransferKind::PayoutRequest,
                reference: "payout".into(),
            }),
            payout: Some(PayoutChange::Request { account_id: market.creator.id, amount: tokens(150), chain: None }),
        };
        let outcomes = store.apply_batch(&[request]).await.expect("request");
        let payout = outcomes[0].as_ref().expect("requested").payout.clone().expect("a payout");
        assert_eq!((payout.state, payout.amount), (PayoutState::Requested, tokens(150)));
        let payouts_account = store.account_by_name(&AccountName::payouts()).await.expect("read").expect("payouts");
        let reject = |reference: &str| BatchItem::Ledger {
            command: Command::Transfer(Transfer {
                debit: payouts_account.id,
                credit: market.creator.id,
                amount: tokens(150),
                kind: TransferKind::PayoutReject,
                reference: reference.into(),
            }),
            payout: Some(PayoutChange::Resolve {
                payout_id: payout.id,
                to: PayoutState::Rejected,
                reference: reference.into(),
                onchain: false,
            }),
        };
        // Resolved twice in one batch: the second is refused.
        let outcomes = store.apply_batch(&[reject("no bank"), reject("again")]).await.expect("resolve");
        assert_eq!(
            outcomes[0].as_ref().expect("rejected").payout.as_ref().map(|p| p.state),
            Some(PayoutState::Rejected)
        );
        assert!(matches!(outcomes[1], Err(ItemError::PayoutNotRequested(_))), "{:?}", outcomes[1]);
        assert_eq!(store.payout(payout.id).await.expect("read").expect("the payout").reference, "no bank");
        assert_eq!(store.payouts(Some(market.creator.id), None).await.expect("list").len(), 1);
        assert!(store.payouts(None, Some(PayoutState::Requested)).await.expect("list").is_empty());
        let totals = store.ledger_totals().await.expect("totals");
        assert_eq!((totals.debits, totals.credits, totals.balances, totals.paid_out), (1_600, 1_600, 1_000, 0));
    })
    .await;
}

/// Grants: nodes reserve slices of a caller's balance, pay calls from them
/// one by one, fall back to the free balance when a grant is gone, and at a
/// start release only their own.
#[tokio::test]
async fn grants_are_slices_of_a_balance_that_nodes_spend_call_by_call() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let expires = store::now_ms() + 60_000;
        let grant = |hold: i64, node: &str, want: u64, price: u64| {
            BatchItem::Grant(GrantRequest {
                hold,
                account: market.caller.id,
                ask: ledger::GrantAsk { want, price, live_nodes: 1 },
                expires_at_ms: expires,
                node: node.into(),
            })
        };
        // 1,000 available, one node alive: a grant takes at most half of
        // what is available, in whole prices, and one price at least. Node a
        // takes 500 of the 600 it wants, node b 200 of the 500 left (a share
        // of 250), node c one price of 300 (its share of 150 is less), and
        // node d nothing.
        let outcomes = store
            .apply_batch(&[grant(11, "a", 600, 100), grant(12, "b", 600, 100), grant(13, "c", 600, 300)])
            .await
            .expect("grants");
        let placed: Vec<u64> = outcomes
            .iter()
            .map(|o| o.as_ref().expect("granted").grant.as_ref().expect("a hold").amount.minor_units())
            .collect();
        assert_eq!(placed, [500, 200, 300]);
        let outcomes = store.apply_batch(&[grant(14, "d", 600, 100)]).await.expect("grant");
        assert!(
            matches!(outcomes[0], Err(ItemError::Ledger(LedgerError::InsufficientBalance { available: 0, .. }))),
            "{:?}",
            outcomes[0]
        );
        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!((caller.balance(), caller.available()), (1_000, 0));

        // Calls paid from grant 11; the last of grant 12 resolves it.
        let from = |hold: i64, price: u64, leaf: &str| {
            let BatchItem::Charge(mut charge) = charge(&market, price, leaf, None) else { unreachable!() };
            charge.grant = Some(hold);
            BatchItem::Charge(charge)
        };
        let outcomes =
            store.apply_batch(&[from(11, 100, "g1"), from(11, 100, "g2"), from(12, 200, "g3")]).await.expect("charges");
        let left: Vec<Option<u64>> = outcomes.iter().map(|o| o.as_ref().expect("charged").grant_left).collect();
        assert_eq!(left, [Some(400), Some(300), Some(0)]);
        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!((caller.balance(), caller.available(), caller.debits_pending), (600, 0, 600));
        // A grant that is gone leaves the call to the free balance: none here.
        let outcomes = store.apply_batch(&[from(12, 100, "g4")]).await.expect("charge");
        assert!(
            matches!(outcomes[0], Err(ItemError::Ledger(LedgerError::InsufficientBalance { .. }))),
            "{:?}",
            outcomes[0]
        );
        // Grants 11 and 13 have 300 left each: a start of node b releases
        // neither; those of nodes a and c release theirs, after which the
        // free balance pays.
        let on_postgres = store.is_postgres();
        assert_eq!(store.release_holds_of("b").await.expect("release"), if on_postgres { 0 } else { 2 });
        if on_postgres {
            assert_eq!(store.release_holds_of("a").await.expect("release"), 1);
            assert_eq!(store.release_holds_of("c").await.expect("release"), 1);
        }
        let outcomes = store.apply_batch(&[from(11, 100, "g5")]).await.expect("charge");
        assert_eq!(outcomes[0].as_ref().expect("charged from the balance").grant_left, None);
        let (caller, _) = store.balances(market.caller.id).await.expect("balances");
        assert_eq!((caller.balance(), caller.available(), caller.debits_pending), (500, 500, 0));
        let totals = store.ledger_totals().await.expect("totals");
        assert_eq!((totals.debits, totals.credits, totals.held), (1_500, 1_500, 0));
        // Every charge was logged, whichever way it was paid.
        assert_eq!(store.tree_size().await.expect("size"), 4);
    })
    .await;
}

/// While a call announces its command as coming, a batch formed meanwhile
/// waits for it (up to the delay) and both commit together; a command that
/// nobody announced is written at once, alone.
#[tokio::test]
async fn a_batch_waits_for_the_commands_announced_as_coming() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let batching = store::Batching { max: 16, delay: std::time::Duration::from_millis(500) };
        let sequencer = store::Sequencer::start(store.clone(), batching, |_, _| {});
        let batches = || sequencer.stats.batches.load(std::sync::atomic::Ordering::Relaxed);
        sequencer.submit(charge(&market, 10, "alone", None)).await.expect("a batch").expect("charged");
        assert_eq!(batches(), 1);

        let coming = sequencer.coming();
        let first = tokio::spawn({
            let (sequencer, item) = (sequencer.clone(), charge(&market, 10, "first", None));
            async move { sequencer.submit(item).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(coming);
        sequencer.submit(charge(&market, 10, "second", None)).await.expect("a batch").expect("charged");
        first.await.expect("the first call").expect("a batch").expect("charged");
        assert_eq!(batches(), 2, "the first waited for the second");
        assert_eq!(sequencer.stats.largest_batch.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(store.balances(market.caller.id).await.expect("balances").0.balance(), 970);
    })
    .await;
}

/// Two stores on one database (two nodes): each writes in turn, and every
/// batch continues the other's log, transfer ids and rollups.
#[tokio::test]
async fn two_nodes_on_one_database_write_one_log_and_one_ledger() {
    on_every_database(|first| async move {
        let second = first.reopen().await.expect("a second store on the database");
        let market = market(&first).await;
        let mut tree = tlog::MemoryTree::new();
        for round in 0..8 {
            let store = if round % 3 == 0 { &first } else { &second };
            let leaf = format!("leaf {round}");
            tree.append(tlog::leaf_hash(leaf.as_bytes()));
            let outcomes = store.apply_batch(&[charge(&market, 10, &leaf, None)]).await.expect("a batch");
            assert_eq!(outcomes[0].as_ref().expect("charged").log_index, Some(round));
        }
        for store in [&first, &second] {
            assert_eq!(store.log_root(8).await.expect("root"), tree.root());
            assert_eq!(store.balances(market.caller.id).await.expect("balances").0.balance(), 920);
            assert_eq!(store.usage_event_count().await.expect("events"), 8);
        }
        let (transfers, _) = first.transfers_for(market.caller.id, None, 100).await.expect("transfers");
        let mut ids: Vec<i64> = transfers.iter().map(|t| t.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 25, "one deposit and three legs per call, each with an id of its own");
        second.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_market_seeds_are_written_once_and_one_node_signs_at_a_time() {
    on_every_database(|first| async move {
        let second = first.reopen().await.expect("a second store on the database");
        assert_eq!(first.market_seed("log", [1; 32]).await.expect("seed"), [1; 32]);
        assert_eq!(second.market_seed("log", [2; 32]).await.expect("seed"), [1; 32], "the first seed stays");
        assert_eq!(second.market_seed("pseudonym", [3; 32]).await.expect("seed"), [3; 32]);

        let leaders =
            [first.holds_signer_lease().await.expect("lease"), second.holds_signer_lease().await.expect("lease")];
        if first.is_postgres() {
            assert_eq!(leaders, [true, false], "one signer at a time");
            assert!(first.holds_signer_lease().await.expect("lease"), "the signer keeps its lease");
            assert!(!second.holds_signer_lease().await.expect("lease"));
            // The signer goes: the other takes over on its next try.
            first.close().await;
            assert!(second.holds_signer_lease().await.expect("lease"));
        } else {
            assert_eq!(leaders, [true, true], "SQLite's nodes share its one writer and sign alike");
        }
        second.close().await;
    })
    .await;
}

/// A single node's SQLite market copied into a fresh database of each kind:
/// every row, then the copy goes on where the source stopped.
#[tokio::test]
async fn a_market_copies_whole_into_another_database_and_goes_on_there() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let source = Store::open(&folder.path().join("source.sqlite")).await.expect("open the source");
    let market = market(&source).await;
    let items: Vec<BatchItem> =
        (0..5).map(|i| charge(&market, 100, &format!("leaf {i}"), Some(&format!("key-{i}")))).collect();
    source.apply_batch(&items).await.expect("calls");
    source.register_node("node-a", &[4; 32]).await.expect("a node");
    source.market_seed("log.key", [5; 32]).await.expect("a seed");
    let checkpoint =
        store::StoredCheckpoint { size: 5, root: source.log_root(5).await.expect("root"), note: "n".into() };
    source.insert_checkpoint(&checkpoint).await.expect("a checkpoint");
    on_every_database(|target| {
        let (source, market, checkpoint) = (source.clone(), &market, checkpoint.clone());
        async move {
            let copied = source.copy_market_to(&target).await.expect("copy");
            let rows = |table: &str| copied.iter().find(|(name, _)| *name == table).map(|(_, rows)| *rows);
            assert_eq!((rows("accounts"), rows("transfers"), rows("log_leaves")), (Some(5), Some(16), Some(5)));
            // A second copy into a market is refused.
            assert!(matches!(source.copy_market_to(&target).await, Err(StoreError::Conflict(_))));
            assert_eq!(target.counts().await.expect("counts"), source.counts().await.expect("counts"));
            assert_eq!(target.ledger_totals().await.expect("totals"), source.ledger_totals().await.expect("totals"));
            assert_eq!(target.log_root(5).await.expect("root"), checkpoint.root);
            assert_eq!(target.latest_checkpoint().await.expect("latest"), Some(checkpoint.clone()));
            assert_eq!(target.node_keys().await.expect("keys"), source.node_keys().await.expect("keys"));
            assert_eq!(target.market_seed("log.key", [6; 32]).await.expect("seed"), [5; 32]);
            let query = RollupQuery {
                dimension: Dimension::Model,
                granularity: store::DAY_MS,
                from_ms: 0,
                to_ms: i64::MAX,
                keys: None,
                include_private: true,
                detail: true,
            };
            assert_eq!(target.rollups(&query).await.expect("rollups"), source.rollups(&query).await.expect("rollups"));
            let replay = target.idempotency_lookup(market.caller.id, "key-3", &digest("key-3"), i64::MAX / 2).await;
            assert_eq!(replay.expect("lookup"), IdempotencyStart::Replay("answer of key-3".into(), Some(3)));
            // It goes on: new rows take ids after the copied ones, the log
            // grows from its edge.
            let newcomer = account(&target, "newcomer").await;
            assert!(newcomer.id > market.caller.id);
            let outcomes = target.apply_batch(&[charge(market, 100, "leaf 5", None)]).await.expect("a call");
            assert_eq!(outcomes[0].as_ref().expect("charged").log_index, Some(5));
            let mut tree = tlog::MemoryTree::new();
            (0..6).for_each(|i| tree.append(tlog::leaf_hash(format!("leaf {i}").as_bytes())));
            assert_eq!(target.log_root(6).await.expect("root"), tree.root());
        }
    })
    .await;
}

/// A batch larger than one statement carries (PostgreSQL binds at most
/// 65,535 values; SQLite writes 500 rows a statement) is written whole.
#[tokio::test]
async fn a_batch_too_large_for_one_statement_is_written_whole() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let events: Vec<UsageEvent> = (0..5_000)
            .map(|i| usage(market.model_id, market.creator.id, (i % 200) as u8, "bulk", 0, "ok", 1_700_000_000_000 + i))
            .collect();
        store.record_usage(&events).await.expect("record");
        assert_eq!(store.usage_event_count().await.expect("count"), 5_000);
        let by_app = store.model_usage_by_app(market.model_id, 0, i64::MAX).await.expect("by app");
        assert_eq!(by_app["bulk"], (5_000, 0, 0));
        let items: Vec<BatchItem> = (0..100).map(|i| charge(&market, 10, &format!("leaf {i}"), None)).collect();
        let outcomes = store.apply_batch(&items).await.expect("a batch");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(store.tree_size().await.expect("size"), 100);
        assert_eq!(store.balances(market.caller.id).await.expect("balances").0.balance(), 0);
    })
    .await;
}

/// A batch of events of several models, creators, apps, nodes and
/// visibilities, over minute, hour and day boundaries, with failures among
/// them, rolls up along every dimension and granularity to exactly what
/// adding each event to its row on its own gives.
#[tokio::test]
async fn a_mixed_batch_rolls_up_as_its_events_one_by_one() {
    on_every_database(|store| async move {
        let market = market(&store).await;
        let other = account(&store, "other-creator").await;
        let second = store.create_model(&other, &public("second")).await.expect("a model").id;
        let start = 1_700_000_000_000 - 1_700_000_000_000 % store::DAY_MS + store::DAY_MS - 90_000;
        let events: Vec<UsageEvent> = (0..600i64)
            .map(|i| {
                let (model, owner) = if i % 3 == 0 { (second, other.id) } else { (market.model_id, market.creator.id) };
                let status = if i % 7 == 0 { "model_failed" } else { "ok" };
                let mut event = usage(model, owner, (i % 11) as u8, ["a", "b", "c"][(i % 3) as usize], 10, status, 0);
                // Across a day's (and so an hour's and minute's) end, then hours later.
                event.created_at_ms = start + i * 307 + if i >= 500 { 3 * store::HOUR_MS } else { 0 };
                event.node = if i % 2 == 0 { "node-a" } else { "node-b" }.into();
                event.public = i % 5 != 0;
                event.latency_us = 100 + (i as u64 * 37) % 9_000;
                event
            })
            .collect();
        store.record_usage(&events).await.expect("record");
        for dimension in Dimension::ALL {
            for granularity in store::GRANULARITIES {
                for include_private in [false, true] {
                    let mut expected: std::collections::BTreeMap<
                        String,
                        std::collections::BTreeMap<i64, store::Rollup>,
                    > = Default::default();
                    for event in events.iter().filter(|e| include_private || e.public) {
                        let key = match dimension {
                            Dimension::Model => event.model_id.to_string(),
                            Dimension::Creator => event.owner_id.to_string(),
                            Dimension::Task => event.task.clone(),
                            Dimension::App => event.app.clone(),
                            Dimension::Node => event.node.clone(),
                        };
                        let bucket = event.created_at_ms.div_euclid(granularity) * granularity;
                        let row = expected.entry(key).or_default().entry(bucket).or_default();
                        row.calls += 1;
                        if event.status == "ok" {
                            row.revenue += event.price;
                            row.creator_revenue += event.creator_share;
                            row.latency.record(event.latency_us);
                        } else {
                            row.errors += 1;
                        }
                        row.callers.insert(u64::from_be_bytes(event.caller[..8].try_into().expect("8 bytes")));
                    }
                    let query = RollupQuery {
                        dimension,
                        granularity,
                        from_ms: 0,
                        to_ms: i64::MAX,
                        keys: None,
                        include_private,
                        detail: true,
                    };
                    let stored = store.rollups(&query).await.expect("rollups");
                    assert_eq!(stored, expected, "{dimension:?} by {granularity} ms, private too: {include_private}");
                }
            }
        }
    })
    .await;
}

/// Model files in an S3-compatible store that nodes share: each node's
/// folder is a cache, filled on first use with bytes checked against their
/// digest.
#[tokio::test]
async fn blobs_live_in_a_shared_s3_store_and_each_node_keeps_a_checked_copy() {
    let Some(bucket) = TestBucket::create("blobs").await else { return };
    let options = bucket.options();
    let folders: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("a folder")).collect();
    let open = |n: usize| BlobStore::open_with(folders[n].path().join("blobs"), &bucket.url, &options);
    let (a, b, c) = (open(0).await.expect("node a"), open(1).await.expect("node b"), open(2).await.expect("node c"));

    // Written on node a: in the remote store before it is in a's folder.
    let model = b"an ONNX model, byte for byte".repeat(1000);
    let mut writer = a.writer().await.expect("a writer");
    writer.write(&model).await.expect("write");
    let finished = writer.finish().await.expect("finish");
    let digest = finished.sha256;
    finished.commit(&a).await.expect("commit");
    assert!(a.path(&digest).exists());

    // Node b reads it from the store, then from its folder; node c opens it as a file.
    assert!(!b.path(&digest).exists());
    assert_eq!(b.read(&digest).await.expect("read on b"), model);
    assert_eq!(std::fs::read(b.path(&digest)).expect("b's copy"), model);
    let mut file = c.open_blob(&digest).await.expect("open on c");
    let mut read = vec![];
    tokio::io::AsyncReadExt::read_to_end(&mut file, &mut read).await.expect("read the file");
    assert_eq!(read, model);

    // A store that answers other bytes under a digest is refused, and nothing is cached.
    let forged = Sha256::digest(b"a model nobody uploaded");
    let key = format!(
        "{}/{}/models/{}",
        bucket.endpoint,
        bucket.url["s3://".len()..].split('/').next().unwrap(),
        forged.to_hex()
    );
    let put = reqwest::Client::new().put(key).body("other bytes").send().await.expect("put a forged object");
    assert!(put.status().is_success(), "{}", put.status());
    let refused = b.read(&forged).await.expect_err("forged bytes");
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData, "{refused}");
    assert!(!b.path(&forged).exists());

    // Removed on node a: gone from the store, so a node that never cached it finds nothing.
    a.remove(&digest).await.expect("remove");
    let d = open(3).await.expect("node d");
    assert_eq!(d.read(&digest).await.expect_err("removed").kind(), std::io::ErrorKind::NotFound);

    // Wrong settings stop the start, with the reason.
    let wrong = BlobStore::open_with(folders[3].path().join("x"), "s3:///models", &options).await.unwrap_err();
    assert!(matches!(wrong, BlobStoreError::Url(_)), "{wrong}");
    let nowhere = [("aws_endpoint_url", "http://127.0.0.1:9"), ("aws_allow_http", "true")];
    let options: Vec<(&str, &str)> = options.iter().copied().filter(|(name, _)| !name.contains("endpoint")).collect();
    let options = [options.as_slice(), &nowhere[..1], &nowhere[1..]].concat();
    let unreachable = BlobStore::open_with(folders[3].path().join("y"), &bucket.url, &options).await.unwrap_err();
    assert!(matches!(unreachable, BlobStoreError::Remote { .. }), "{unreachable}");
}
