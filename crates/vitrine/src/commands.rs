//! The client commands: each one is a route of the API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use domain::{Amount, ModelRef};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::Command;
use crate::client::{Client, ClientArgs, ClientConfig};
use market::InferResponse;
use server::wire::{
    AccountView, AutomaticPayoutsView, CreatedAccount, DeletedModelView, Health, ModelPage, ModelView, PayoutList,
    PayoutView, QuarantineList, TensorIn, TensorSpecView, TransferPage, TransferView, VersionList, VersionView,
};

use crate::output::{self, tokens_of};

#[derive(Debug, Args)]
pub struct SignupArgs {
    /// The account name: 2 to 32 lowercase letters, digits and dashes.
    name: String,
}

#[derive(Debug, Args)]
pub struct ListModelsArgs {
    /// Text to find in names, descriptions and tags.
    #[arg(long, short)]
    q: Option<String>,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    /// recent (default) or name.
    #[arg(long)]
    sort: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    #[arg(long)]
    page_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Create a model repository under your account.
    Create(ModelFieldsArgs),
    /// Change a model's description, task, licence, tags, visibility or price.
    Update(ModelFieldsArgs),
    /// Upload an .onnx file as the model's next version; or a folder (or a
    /// .tar of one) holding one .onnx file and its external data files.
    Push {
        /// owner/name
        model: String,
        /// An .onnx file, a folder, or a .tar archive.
        file: PathBuf,
        /// Send the file in pieces of this many bytes, through an upload that
        /// survives a broken connection: run the same command again to resume
        /// it [default: pieces of 16 MiB from 64 MiB on; 0: one request].
        #[arg(long)]
        piece_bytes: Option<u64>,
    },
    /// Show a model and its versions.
    Show { model: String },
    /// Set a model's price per inference, in tokens (0.002).
    Price { model: String, price: String },
    /// List a model's versions.
    Versions { model: String },
    /// Hide a model from listings and search; it still answers by its name.
    Unlist { model: String },
    /// Show an unlisted model in listings and search again.
    Relist { model: String },
    /// Delete a model for good: it answers 410 from then on and its name is
    /// not given out again; its receipts, usage and earnings stay.
    Delete {
        model: String,
        /// Deleting cannot be undone: say so.
        #[arg(long)]
        yes: bool,
    },
    /// Yank a version: its calls answer 410 and "latest" skips it.
    Yank {
        model: String,
        version: i64,
        /// Shown to its callers.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put a yanked version back.
    Unyank { model: String, version: i64 },
    /// Download a version's .onnx file.
    Download {
        model: String,
        /// The version [default: latest].
        #[arg(long)]
        version: Option<i64>,
        /// Where to write the file.
        #[arg(long, short)]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TransfersArgs {
    #[arg(long)]
    limit: Option<u32>,
    #[arg(long)]
    page_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct DepositArgs {
    /// The account to credit.
    account: String,
    /// Tokens, as a decimal (12.5).
    amount: String,
    /// The outside payment's reference; a retry with the same one is not repeated.
    #[arg(long)]
    reference: String,
}

#[derive(Debug, Args)]
pub struct TopUpArgs {
    /// Tokens, as a decimal (12.5).
    amount: String,
    /// The wallet that pays: a file holding its key, `0x` and 64 hex digits,
    /// readable by you alone (mode 0600). It signs one EIP-3009
    /// authorization of exactly the amount to the market; the market pays
    /// the gas.
    #[arg(long, value_name = "FILE")]
    wallet_key_file: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum AddressCommand {
    /// Sign the market's challenge with the wallet's key and send it: from
    /// then on, transfers of the market's token from that address to the
    /// market's address are credited to you once final.
    Prove {
        /// The wallet: a file holding its key, `0x` and 64 hex digits,
        /// readable by you alone (mode 0600).
        #[arg(long, value_name = "FILE")]
        wallet_key_file: std::path::PathBuf,
    },
    /// The addresses you proved.
    List,
}

#[derive(Debug, Subcommand)]
pub enum PayoutCommand {
    /// Ask to be paid out this many tokens.
    Request {
        amount: String,
        /// On a market with a chain: one of your proven addresses (`vitrine
        /// address prove`), paid by a token transfer.
        #[arg(long)]
        address: Option<String>,
    },
    /// Your payouts (with the operator key and --all, everyone's).
    List {
        /// requested, completed or rejected.
        #[arg(long)]
        state: Option<String>,
        /// Everyone's payouts (operator key).
        #[arg(long)]
        all: bool,
    },
    /// Mark a payout paid (operator key).
    Complete {
        id: i64,
        /// The outside payment's reference.
        #[arg(long)]
        reference: String,
    },
    /// Refuse a payout; its tokens go back (operator key).
    Reject {
        id: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// On a market with a chain: your automatic payouts. With --address
    /// and --threshold, whenever your balance reaches the threshold all of
    /// it is paid to the address; --off stops them; alone, shows them.
    Auto {
        /// One of your proven addresses.
        #[arg(long, requires = "threshold", conflicts_with = "off")]
        address: Option<String>,
        /// Tokens, as a decimal (e.g. 10 or 2.5).
        #[arg(long, requires = "address")]
        threshold: Option<String>,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Every quarantined version, most recent first.
    List,
    /// Take a version out of service: its calls answer 503 until lifted.
    Add {
        /// owner/name
        model: String,
        version: i64,
        #[arg(long)]
        reason: String,
    },
    /// Put a quarantined version back in service.
    Lift {
        /// owner/name
        model: String,
        version: i64,
    },
}

/// Models taken down by the operator (operator key).
#[derive(Debug, Subcommand)]
pub enum TakedownCommand {
    /// Take a model down: it answers 410 to everyone with the reason; its
    /// owner still sees it.
    Add {
        /// owner/name
        model: String,
        #[arg(long)]
        reason: String,
    },
    /// Restore a model taken down.
    Restore {
        /// owner/name
        model: String,
    },
}

#[derive(Debug, Args)]
pub struct ModelFieldsArgs {
    /// owner/name, or just the name for your own account.
    model: String,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Read the Markdown description from a file.
    #[arg(long, conflicts_with = "description")]
    description_file: Option<PathBuf>,
    #[arg(long)]
    license: Option<String>,
    /// A tag; repeat for several (replaces all tags on update).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// public or private.
    #[arg(long)]
    visibility: Option<String>,
    /// Price per inference in tokens, as a decimal (0.002).
    #[arg(long)]
    price: Option<String>,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    /// owner/name, or owner/name@version.
    model: String,
    /// NAME=JSON or NAME=@FILE: one input tensor, {"dtype", "shape", "data"},
    /// or just its numbers as a nested array (`x=[[1,2,3,4]]`): the shape
    /// is read from the nesting and the dtype is the model's.
    #[arg(long = "input", short = 'i', value_name = "NAME=TENSOR")]
    inputs: Vec<String>,
    /// JSON or @FILE holding all inputs: {"inputs": {...}} or the map itself.
    #[arg(long = "inputs", value_name = "JSON")]
    all_inputs: Option<String>,
    /// Sent as X-App, to attribute the call to an application.
    #[arg(long)]
    app: Option<String>,
    /// Sent as Idempotency-Key: a retry with the same key is charged once.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Amounts are shown and read in the server's token. A server that does not
/// say (or cannot be reached: the command itself will say so) leaves the
/// defaults.
pub async fn learn_token(client: &Client) {
    if let Ok(health) = client.send_as::<Health>(client.request(Method::GET, "/v1/health")).await {
        output::set_token(health.token.symbol, health.token.decimals);
    }
}

pub async fn run(command: Command, args: ClientArgs) -> anyhow::Result<()> {
    let client = args.client()?;
    learn_token(&client).await;
    match command {
        Command::Serve(_)
        | Command::Bench(_)
        | Command::Demo(_)
        | Command::Migrate(_)
        | Command::Witness(_)
        | Command::Audit(_)
        | Command::Receipt(_)
        | Command::Worker { .. } => {
            unreachable!("handled in main")
        }
        Command::Signup(signup) => run_signup(&client, &args, signup).await,
        Command::Whoami => {
            client.require_key()?;
            let account: AccountView = client.send_as(client.request(Method::GET, "/v1/account")).await?;
            if args.json {
                output::json(&account);
            } else {
                output::fields(&[
                    ("name", account.name),
                    ("id", account.id.to_string()),
                    ("balance", tokens_of(&account.balance)),
                    ("held", tokens_of(&account.held)),
                    ("earned", tokens_of(&account.earned_total)),
                ]);
            }
            Ok(())
        }
        Command::Models(list) => run_models(&client, args.json, list).await,
        Command::Model(model) => {
            let uploads_state = args.config_path()?.with_file_name("uploads.json");
            run_model(&client, args.json, model, uploads_state).await
        }
        Command::Infer(infer) => run_infer(&client, args.json, infer).await,
        Command::Balance => {
            client.require_key()?;
            let account: AccountView = client.send_as(client.request(Method::GET, "/v1/account")).await?;
            if args.json {
                output::json(&account);
                return Ok(());
            }
            let units = |text: &str| text.parse::<i128>().unwrap_or(0);
            output::fields(&[
                ("account", account.name),
                ("balance", tokens_of(&account.balance)),
                ("held", tokens_of(&account.held)),
                ("available", tokens_of(units(&account.balance) - units(&account.held))),
                ("earned", tokens_of(&account.earned_total)),
            ]);
            Ok(())
        }
        Command::Transfers(list) => {
            client.require_key()?;
            let mut query: Vec<(&str, String)> = vec![];
            if let Some(limit) = list.limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(token) = list.page_token {
                query.push(("page_token", token));
            }
            let page: TransferPage =
                client.send_as(client.request(Method::GET, "/v1/account/transfers").query(&query)).await?;
            if args.json {
                output::json(&page);
                return Ok(());
            }
            print_transfers(&page.items);
            if let Some(token) = &page.next_page_token {
                println!("more: --page-token {token}");
            }
            Ok(())
        }
        Command::Deposit(deposit) => {
            client.require_key()?;
            let amount = decimal_tokens(&deposit.amount, "amount")?;
            let body =
                json!({"account": deposit.account, "amount": amount.to_string(), "reference": deposit.reference});
            let transfer: TransferView =
                client.send_as(client.request(Method::POST, "/v1/admin/deposits").json(&body)).await?;
            if args.json {
                output::json(&transfer);
            } else {
                println!("deposited {} to {} (transfer {})", tokens_of(&transfer.amount), deposit.account, transfer.id);
            }
            Ok(())
        }
        Command::Topup(top_up) => run_top_up(&client, args.json, top_up).await,
        Command::Address(address) => run_address(&client, args.json, address).await,
        Command::Faucet { amount } => {
            client.require_key()?;
            let amount = decimal_tokens(&amount, "amount")?;
            let body = json!({"amount": amount.to_string()});
            let transfer: TransferView =
                client.send_as(client.request(Method::POST, "/v1/dev/faucet").json(&body)).await?;
            if args.json {
                output::json(&transfer);
            } else {
                println!("received {} from the faucet", tokens_of(&transfer.amount));
            }
            Ok(())
        }
        Command::Payout(payout) => run_payout(&client, args.json, payout).await,
        Command::Quarantine(quarantine) => run_quarantine(&client, args.json, quarantine).await,
        Command::Takedown(takedown) => run_takedown(&client, args.json, takedown).await,
        Command::Stats(stats) => crate::stats::run_stats(&client, args.json, stats).await,
        Command::Earnings(series) => {
            crate::stats::run_account_series(&client, args.json, crate::stats::AccountSeriesKind::Earnings, series)
                .await
        }
        Command::Spending(series) => {
            crate::stats::run_account_series(&client, args.json, crate::stats::AccountSeriesKind::Spending, series)
                .await
        }
    }
}

/// Sends a request with a JSON body, if there is one, and reads the answer.
async fn send_with_body<T: serde::de::DeserializeOwned>(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<T> {
    let mut request = client.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    client.send_as(request).await
}

async fn run_takedown(client: &Client, json: bool, command: TakedownCommand) -> anyhow::Result<()> {
    client.require_key()?;
    let (model, method, body) = match command {
        TakedownCommand::Add { model, reason } => (model, Method::POST, Some(json!({"reason": reason}))),
        TakedownCommand::Restore { model } => (model, Method::DELETE, None),
    };
    let model_ref = parse_model(&model)?;
    let path = format!("/v1/admin/models/{}/{}/takedown", model_ref.owner, model_ref.name);
    let shown: ModelView = send_with_body(client, method, &path, body).await?;
    if json {
        output::json(&shown);
    } else {
        match &shown.takedown {
            None => println!("{model_ref} is restored"),
            Some(takedown) => println!("{model_ref} is taken down: {}", takedown.reason),
        }
    }
    Ok(())
}

async fn run_quarantine(client: &Client, json: bool, command: QuarantineCommand) -> anyhow::Result<()> {
    client.require_key()?;
    let (model, version, method, body) = match command {
        QuarantineCommand::List => {
            let list: QuarantineList = client.send_as(client.request(Method::GET, "/v1/admin/quarantines")).await?;
            if json {
                output::json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> =
                list.items.into_iter().map(|q| vec![format!("{}@{}", q.model, q.version), q.since, q.reason]).collect();
            output::table(&["version", "since", "reason"], &rows);
            return Ok(());
        }
        QuarantineCommand::Add { model, version, reason } => {
            (model, version, Method::POST, Some(json!({"reason": reason})))
        }
        QuarantineCommand::Lift { model, version } => (model, version, Method::DELETE, None),
    };
    let model_ref = parse_model(&model)?;
    let path = format!("/v1/models/{}/{}/versions/{version}/quarantine", model_ref.owner, model_ref.name);
    let shown: VersionView = send_with_body(client, method, &path, body).await?;
    if json {
        output::json(&shown);
    } else {
        match &shown.quarantine {
            None => println!("{model_ref}@{version} is back in service"),
            Some(quarantine) => println!("{model_ref}@{version} is quarantined: {}", quarantine.reason),
        }
    }
    Ok(())
}

async fn run_payout(client: &Client, json: bool, command: PayoutCommand) -> anyhow::Result<()> {
    client.require_key()?;
    let payout: PayoutView = match command {
        PayoutCommand::Request { amount, address } => {
            let amount = decimal_tokens(&amount, "amount")?;
            let mut body = json!({"amount": amount.to_string()});
            if let Some(address) = address {
                body["address"] = json!(address);
            }
            client.send_as(client.request(Method::POST, "/v1/payouts").json(&body)).await?
        }
        PayoutCommand::Auto { address, threshold, off } => {
            let path = "/v1/payouts/automatic";
            let set: AutomaticPayoutsView = match (address, threshold) {
                _ if off => {
                    client.send(client.request(Method::DELETE, path)).await?;
                    AutomaticPayoutsView::default()
                }
                (Some(address), Some(threshold)) => {
                    let threshold = decimal_tokens(&threshold, "threshold")?.to_string();
                    let body = json!({"address": address, "threshold": threshold});
                    client.send_as(client.request(Method::PUT, path).json(&body)).await?
                }
                _ => client.send_as(client.request(Method::GET, path)).await?,
            };
            match (json, set.address, set.threshold) {
                (true, address, threshold) => output::json(&json!({"address": address, "threshold": threshold})),
                (false, Some(address), Some(threshold)) => println!(
                    "automatic payouts: all of your balance to {address} once it reaches {}",
                    tokens_of(&threshold)
                ),
                (false, ..) => println!("no automatic payouts"),
            }
            return Ok(());
        }
        PayoutCommand::List { state, all } => {
            let path = if all { "/v1/admin/payouts" } else { "/v1/payouts" };
            let query: Vec<(&str, String)> = state.map(|s| ("state", s)).into_iter().collect();
            let list: PayoutList = client.send_as(client.request(Method::GET, path).query(&query)).await?;
            if json {
                output::json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .items
                .into_iter()
                .map(|p| {
                    let to = p.address.unwrap_or_default();
                    let transaction = p.transaction.unwrap_or_default();
                    vec![
                        p.id.to_string(),
                        p.account,
                        tokens_of(&p.amount),
                        p.state,
                        to,
                        transaction,
                        p.reference,
                        p.created_at,
                    ]
                })
                .collect();
            let columns = ["id", "account", "amount", "state", "to", "transaction", "reference", "requested"];
            output::table(&columns, &rows);
            return Ok(());
        }
        PayoutCommand::Complete { id, reference } => {
            let path = format!("/v1/admin/payouts/{id}/complete");
            client.send_as(client.request(Method::POST, &path).json(&json!({"reference": reference}))).await?
        }
        PayoutCommand::Reject { id, reason } => {
            let path = format!("/v1/admin/payouts/{id}/reject");
            client.send_as(client.request(Method::POST, &path).json(&json!({"reference": reason}))).await?
        }
    };
    if json {
        output::json(&payout);
    } else {
        println!("payout {} of {} for {}: {}", payout.id, tokens_of(&payout.amount), payout.account, payout.state);
        if let Some(address) = &payout.address {
            let transaction = payout.transaction.as_deref().map(|t| format!(", transaction {t}")).unwrap_or_default();
            println!("paid on the chain to {address}{transaction}");
        }
    }
    Ok(())
}

fn print_transfers(items: &[TransferView]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.kind.clone(),
                tokens_of(&t.amount),
                t.debit_account.clone(),
                t.credit_account.clone(),
                t.reference.clone(),
                t.created_at.clone(),
            ]
        })
        .collect();
    output::table(&["id", "kind", "amount", "from", "to", "reference", "time"], &rows);
}

/// Tokens typed by a person, as a decimal, in minor units.
fn decimal_tokens(text: &str, what: &str) -> anyhow::Result<Amount> {
    Amount::parse_decimal(text, output::token_decimals()).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

async fn run_signup(client: &Client, args: &ClientArgs, signup: SignupArgs) -> anyhow::Result<()> {
    let created: CreatedAccount =
        client.send_as(client.request(Method::POST, "/v1/accounts").json(&json!({"name": signup.name}))).await?;
    let key = created.api_key.clone();
    let path = args.config_path()?;
    let config = ClientConfig { url: Some(client.base().to_owned()), key: Some(key.clone()) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    server::write_secret(&path, &toml::to_string(&config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if args.json {
        output::json(&created);
    } else {
        println!("account {} created; its API key is saved in {}", signup.name, path.display());
        println!("api key (shown once): {key}");
    }
    Ok(())
}

async fn run_models(client: &Client, json: bool, list: ListModelsArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = vec![];
    for (key, value) in [
        ("q", list.q),
        ("task", list.task),
        ("owner", list.owner),
        ("sort", list.sort),
        ("page_token", list.page_token),
    ] {
        if let Some(value) = value {
            query.push((key, value));
        }
    }
    if let Some(limit) = list.limit {
        query.push(("limit", limit.to_string()));
    }
    let page: ModelPage = client.send_as(client.request(Method::GET, "/v1/models").query(&query)).await?;
    if json {
        output::json(&page);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|m| {
            vec![
                format!("{}/{}", m.owner, m.name),
                m.task.clone(),
                if m.price_per_inference == "0" { "free".to_owned() } else { tokens_of(&m.price_per_inference) },
                output::or_dash(m.latest_version),
                // Your own unlisted models show here (to you alone), said so.
                if m.listed {
                    m.visibility.clone()
                } else {
                    format!("{}, unlisted (only you see it here)", m.visibility)
                },
            ]
        })
        .collect();
    output::table(&["model", "task", "price per call", "version", "visibility"], &rows);
    if let Some(mended) = &page.corrected_query {
        println!("nothing matched as written; these match \"{mended}\"");
    }
    if let Some(token) = &page.next_page_token {
        println!("more: --page-token {token}");
    }
    Ok(())
}

/// `uploads_state`: where `model push` remembers uploads it may resume.
async fn run_model(client: &Client, json: bool, command: ModelCommand, uploads_state: PathBuf) -> anyhow::Result<()> {
    match command {
        ModelCommand::Create(fields) => {
            client.require_key()?;
            let me: AccountView = client.send_as(client.request(Method::GET, "/v1/account")).await?;
            let name = own_model_name(&fields.model, &me.name)?;
            let mut body = model_fields(&fields)?;
            body.insert("name".into(), json!(name));
            let model: ModelView = client.send_as(client.request(Method::POST, "/v1/models").json(&body)).await?;
            print_model(json, &model, None);
        }
        ModelCommand::Update(fields) => {
            client.require_key()?;
            let model_ref = parse_model(&fields.model)?;
            let body = model_fields(&fields)?;
            let path = format!("/v1/models/{}/{}", model_ref.owner, model_ref.name);
            let model: ModelView = client.send_as(client.request(Method::PATCH, &path).json(&body)).await?;
            print_model(json, &model, None);
        }
        ModelCommand::Push { model, file, piece_bytes } => {
            client.require_key()?;
            let model_ref = parse_model(&model)?;
            let options = crate::push::PushOptions { piece_bytes, state_file: uploads_state };
            let version = crate::push::push(client, &model_ref, &file, &options).await?;
            if json {
                output::json(&version);
            } else {
                println!(
                    "pushed {model_ref} version {} ({} bytes, sha256 {})",
                    version.version, version.size_bytes, version.blob_sha256
                );
                print_specs(&version);
            }
        }
        ModelCommand::Show { model } => {
            let model_ref = parse_model(&model)?;
            let path = format!("/v1/models/{}/{}", model_ref.owner, model_ref.name);
            let shown: ModelView = client.send_as(client.request(Method::GET, &path)).await?;
            let versions: VersionList =
                client.send_as(client.request(Method::GET, &format!("{path}/versions"))).await?;
            print_model(json, &shown, Some(&versions));
        }
        ModelCommand::Price { model, price } => {
            client.require_key()?;
            let model_ref = parse_model(&model)?;
            let amount = decimal_tokens(&price, "price")?;
            let path = format!("/v1/models/{}/{}", model_ref.owner, model_ref.name);
            let body = json!({"price_per_inference": amount.to_string()});
            let updated: ModelView = client.send_as(client.request(Method::PATCH, &path).json(&body)).await?;
            if json {
                output::json(&updated);
            } else {
                println!("{model_ref} now costs {} per inference", tokens_of(&updated.price_per_inference));
            }
        }
        ModelCommand::Versions { model } => {
            let model_ref = parse_model(&model)?;
            let path = format!("/v1/models/{}/{}/versions", model_ref.owner, model_ref.name);
            let versions: VersionList = client.send_as(client.request(Method::GET, &path)).await?;
            if json {
                output::json(&versions);
            } else {
                print_versions(&versions);
            }
        }
        ModelCommand::Unlist { model } => set_listed(client, json, &model, false).await?,
        ModelCommand::Relist { model } => set_listed(client, json, &model, true).await?,
        ModelCommand::Delete { model, yes } => {
            client.require_key()?;
            let model_ref = parse_model(&model)?;
            if !yes {
                bail!("deleting {model_ref} cannot be undone (its name is not given out again): add --yes");
            }
            let path = format!("/v1/models/{}/{}", model_ref.owner, model_ref.name);
            let deleted: DeletedModelView = client.send_as(client.request(Method::DELETE, &path)).await?;
            if json {
                output::json(&deleted);
            } else {
                println!("deleted {model_ref}; your models now store {} bytes", deleted.storage_bytes);
            }
        }
        ModelCommand::Yank { model, version, reason } => {
            yank(client, json, &model, version, json!({"yanked": true, "reason": reason})).await?;
        }
        ModelCommand::Unyank { model, version } => {
            yank(client, json, &model, version, json!({"yanked": false})).await?;
        }
        ModelCommand::Download { model, version, output: target } => {
            let model_ref = parse_model(&model)?;
            let path = format!("/v1/models/{}/{}/versions", model_ref.owner, model_ref.name);
            let versions: VersionList = client.send_as(client.request(Method::GET, &path)).await?;
            // Without --version, the model's latest: the newest version not yanked.
            let version = match version {
                Some(n) => Some(n),
                None => {
                    let path = format!("/v1/models/{}/{}", model_ref.owner, model_ref.name);
                    let shown: ModelView = client.send_as(client.request(Method::GET, &path)).await?;
                    shown.latest_version
                }
            };
            let chosen = version
                .and_then(|n| versions.items.iter().find(|v| v.version == n))
                .with_context(|| format!("{model_ref} has no such version"))?;
            let sha = &chosen.blob_sha256;
            let response = client.send(client.request(Method::GET, &format!("/v1/blobs/{sha}"))).await?;
            let bytes = response.bytes().await.context("the download broke off")?;
            if domain::Sha256::digest(&bytes).to_hex() != *sha {
                bail!("the downloaded file does not match its SHA-256 {sha}");
            }
            std::fs::write(&target, &bytes).with_context(|| format!("cannot write {}", target.display()))?;
            println!("wrote {} ({} bytes, sha256 {sha} verified)", target.display(), bytes.len());
        }
    }
    Ok(())
}

async fn run_infer(client: &Client, json: bool, args: InferArgs) -> anyhow::Result<()> {
    client.require_key()?;
    let (model, version) = match args.model.split_once('@') {
        Some((model, version)) => (model, Some(version.parse::<i64>().context("the version after '@' is a number")?)),
        None => (args.model.as_str(), None),
    };
    let model_ref = parse_model(model)?;
    let mut inputs = Map::new();
    if let Some(all) = &args.all_inputs {
        let value = read_json_argument(all)?;
        let map = value.get("inputs").cloned().unwrap_or(value);
        inputs = map.as_object().cloned().context("--inputs takes a JSON object of input tensors")?;
    }
    for input in &args.inputs {
        let (name, tensor) =
            input.split_once('=').with_context(|| format!("--input takes NAME=JSON or NAME=@FILE, not '{input}'"))?;
        inputs.insert(name.to_owned(), read_json_argument(tensor)?);
    }
    if inputs.is_empty() {
        bail!("give the model's inputs with --input NAME=JSON (or NAME=@FILE) or --inputs");
    }
    if inputs.values().any(Value::is_array) {
        let signature = input_signature(client, &model_ref, version).await?;
        for (name, value) in inputs.iter_mut() {
            if value.is_array() {
                let dtype =
                    signature.iter().find(|s| s.name == *name).map(|s| s.dtype.as_str()).with_context(|| {
                        let names: Vec<&str> = signature.iter().map(|s| s.name.as_str()).collect();
                        format!("{model_ref} has no input '{name}'; its inputs: {}", names.join(", "))
                    })?;
                *value = tensor_from_array(name, value, dtype)?;
            }
        }
    }
    let path = match version {
        Some(n) => format!("/v1/models/{}/{}/versions/{n}/infer", model_ref.owner, model_ref.name),
        None => format!("/v1/models/{}/{}/infer", model_ref.owner, model_ref.name),
    };
    let mut request = client.request(Method::POST, &path).json(&json!({"inputs": inputs}));
    if let Some(app) = &args.app {
        request = request.header("X-App", app);
    }
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response: InferResponse = client.send_as(request).await?;
    if json {
        output::json(&response);
        return Ok(());
    }
    let outputs: BTreeMap<String, TensorIn> =
        serde_json::from_str(response.outputs.get()).context("the answer's outputs are not tensors")?;
    let rows: Vec<Vec<String>> = outputs
        .into_iter()
        .map(|(name, t)| vec![name, t.dtype, output::shape(&t.shape), output::preview(t.data.get(), 8)])
        .collect();
    output::table(&["output", "dtype", "shape", "data"], &rows);
    println!("version {} · price {} · {} ms", response.version, tokens_of(&response.price), response.latency_ms);
    Ok(())
}

/// The inputs of the version a call will run (the latest without one).
async fn input_signature(
    client: &Client,
    model: &ModelRef,
    version: Option<i64>,
) -> anyhow::Result<Vec<TensorSpecView>> {
    let path = format!("/v1/models/{}/{}", model.owner, model.name);
    let version = match version {
        Some(n) => n,
        None => {
            let shown: ModelView = client.send_as(client.request(Method::GET, &path)).await?;
            shown.latest_version.with_context(|| format!("{model} has no version to call"))?
        }
    };
    let found: VersionView = client.send_as(client.request(Method::GET, &format!("{path}/versions/{version}"))).await?;
    Ok(found.inputs)
}

/// A tensor from its numbers as a nested JSON array: the shape read from
/// the nesting (every row as long as its siblings), the data flattened.
fn tensor_from_array(name: &str, value: &Value, dtype: &str) -> anyhow::Result<Value> {
    fn walk(value: &Value, depth: usize, shape: &mut Vec<usize>, data: &mut Vec<Value>) -> Result<(), String> {
        match value {
            Value::Array(items) => {
                match shape.get(depth) {
                    None => shape.push(items.len()),
                    Some(&length) if length != items.len() => {
                        return Err(format!("its rows at depth {depth} are not all {length} long"));
                    }
                    Some(_) => {}
                }
                items.iter().try_for_each(|item| walk(item, depth + 1, shape, data))
            }
            Value::Number(_) | Value::Bool(_) if depth == shape.len() => {
                data.push(value.clone());
                Ok(())
            }
            Value::Number(_) | Value::Bool(_) => Err("it mixes numbers and rows at one depth".to_owned()),
            other => Err(format!("it holds {other}, not a number")),
        }
    }
    let (mut shape, mut data) = (vec![], vec![]);
    walk(value, 0, &mut shape, &mut data).map_err(|why| anyhow::anyhow!("--input {name}: {why}"))?;
    if shape.iter().product::<usize>() != data.len() {
        bail!("--input {name}: its rows are not all equally deep");
    }
    Ok(json!({"dtype": dtype, "shape": shape, "data": data}))
}

/// `@path` reads a file; anything else is inline JSON.
fn read_json_argument(text: &str) -> anyhow::Result<Value> {
    let (source, json) = match text.strip_prefix('@') {
        Some(path) => (path.to_owned(), std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?),
        None => ("the argument".to_owned(), text.to_owned()),
    };
    serde_json::from_str(&json).with_context(|| format!("{source} is not valid JSON"))
}

fn parse_model(text: &str) -> anyhow::Result<ModelRef> {
    text.parse::<ModelRef>().map_err(|e| anyhow::anyhow!("'{text}': {e}"))
}

/// For `model create`: the name alone, or owner/name where owner is you.
fn own_model_name(text: &str, me: &str) -> anyhow::Result<String> {
    match text.split_once('/') {
        Some((owner, name)) if owner == me => Ok(name.to_owned()),
        Some((owner, _)) => bail!("you are signed in as '{me}' and cannot create models for '{owner}'"),
        None => Ok(text.to_owned()),
    }
}

fn model_fields(fields: &ModelFieldsArgs) -> anyhow::Result<Map<String, Value>> {
    let mut body = Map::new();
    let description = match &fields.description_file {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => fields.description.clone(),
    };
    for (key, value) in [
        ("task", fields.task.clone()),
        ("description", description),
        ("license", fields.license.clone()),
        ("visibility", fields.visibility.clone()),
    ] {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    }
    if !fields.tags.is_empty() {
        body.insert("tags".into(), json!(fields.tags));
    }
    if let Some(price) = &fields.price {
        let amount = decimal_tokens(price, "--price")?;
        body.insert("price_per_inference".into(), json!(amount.to_string()));
    }
    Ok(body)
}

fn print_model(json: bool, model: &ModelView, versions: Option<&VersionList>) {
    if json {
        match versions {
            Some(versions) => output::json(&json!({"model": model, "versions": versions.items})),
            None => output::json(model),
        }
        return;
    }
    output::fields(&[
        ("model", format!("{}/{}", model.owner, model.name)),
        ("task", model.task.clone()),
        ("license", model.license.clone()),
        ("tags", model.tags.join(", ")),
        ("visibility", model.visibility.clone()),
        ("listed", model.listed.to_string()),
        ("price", tokens_of(&model.price_per_inference)),
        ("latest version", output::or_dash(model.latest_version)),
        ("created", model.created_at.clone()),
    ]);
    if let Some(takedown) = &model.takedown {
        println!("taken down by the operator since {}: {}", takedown.since, takedown.reason);
    }
    if !model.description.is_empty() {
        println!("\n{}", model.description);
    }
    if let Some(versions) = versions {
        println!();
        print_versions(versions);
    }
}

async fn set_listed(client: &Client, json: bool, model: &str, listed: bool) -> anyhow::Result<()> {
    client.require_key()?;
    let model_ref = parse_model(model)?;
    let path = format!("/v1/models/{}/{}", model_ref.owner, model_ref.name);
    let updated: ModelView =
        client.send_as(client.request(Method::PATCH, &path).json(&json!({"listed": listed}))).await?;
    if json {
        output::json(&updated);
    } else if listed {
        println!("{model_ref} is listed");
    } else {
        println!("{model_ref} is unlisted: in no listing or search, still callable by its name");
    }
    Ok(())
}

async fn yank(client: &Client, json: bool, model: &str, version: i64, body: Value) -> anyhow::Result<()> {
    client.require_key()?;
    let model_ref = parse_model(model)?;
    let path = format!("/v1/models/{}/{}/versions/{version}", model_ref.owner, model_ref.name);
    let shown: VersionView = client.send_as(client.request(Method::PATCH, &path).json(&body)).await?;
    if json {
        output::json(&shown);
    } else if shown.yank.is_none() {
        println!("{model_ref}@{version} is back");
    } else {
        println!("{model_ref}@{version} is yanked: its calls answer 410 and latest skips it");
    }
    Ok(())
}

fn print_versions(versions: &VersionList) {
    let rows: Vec<Vec<String>> = versions
        .items
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.size_bytes.to_string(),
                specs(&v.inputs),
                specs(&v.outputs),
                v.blob_sha256.clone(),
                match (&v.quarantine, &v.yank) {
                    (Some(quarantine), _) => format!("quarantined: {}", quarantine.reason),
                    (None, Some(yank)) if yank.reason.is_empty() => "yanked".to_owned(),
                    (None, Some(yank)) => format!("yanked: {}", yank.reason),
                    (None, None) => "serving".to_owned(),
                },
            ]
        })
        .collect();
    output::table(&["version", "bytes", "inputs", "outputs", "sha256", "state"], &rows);
}

fn print_specs(version: &VersionView) {
    println!("inputs:  {}", specs(&version.inputs));
    println!("outputs: {}", specs(&version.outputs));
}

fn specs(list: &[TensorSpecView]) -> String {
    let specs: Vec<String> =
        list.iter().map(|s| format!("{}: {}{}", s.name, s.dtype, output::dims(&s.shape))).collect();
    specs.join("; ")
}

/// `vitrine topup`: asks the market for its terms (402), signs a payment of
/// them with the wallet's key, and sends it; the market settles it and
/// credits the balance once final.
async fn run_top_up(client: &Client, json: bool, args: TopUpArgs) -> anyhow::Result<()> {
    client.require_key()?;
    let amount = decimal_tokens(&args.amount, "amount")?;
    let wallet = chain::read_key(&args.wallet_key_file)?;
    let body = json!({"amount": amount.to_string()});
    let asked = client.request(Method::POST, "/v1/account/topup").json(&body).send().await?;
    if asked.status() == reqwest::StatusCode::NOT_FOUND {
        anyhow::bail!("this market has no chain: its operator deposits to balances (vitrine deposit)");
    }
    anyhow::ensure!(
        asked.status() == reqwest::StatusCode::PAYMENT_REQUIRED,
        "the market answered {} instead of its terms: {}",
        asked.status(),
        asked.text().await.unwrap_or_default()
    );
    let header = asked.headers().get("payment-required").context("the 402 carries no PAYMENT-REQUIRED")?;
    let required: chain::x402::PaymentRequired = chain::x402::decode_header(header.to_str()?)?;
    let terms = required.accepts.into_iter().next().context("the market offers no way to pay")?;
    let chain_id = terms
        .network
        .strip_prefix("eip155:")
        .and_then(|id| id.parse::<u64>().ok())
        .with_context(|| format!("the market is paid on {}, not an EVM chain", terms.network))?;
    let text = |key: &str| terms.extra.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let token =
        chain::Token { address: terms.asset.parse()?, name: text("name"), version: text("version"), decimals: 0 };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let payment =
        chain::x402::sign_payment(&wallet, &terms, chain_id, &token, now - 600, now + terms.max_timeout_seconds)?;
    eprintln!("paying {} from {} on {} …", tokens_of(amount), chain::x402::lower(wallet.address()), terms.network);
    let request = client
        .request(Method::POST, "/v1/account/topup")
        .header("PAYMENT-SIGNATURE", chain::x402::encode_header(&payment))
        .json(&body);
    let top_up: server::wire::TopUpView = client.send_as(request).await?;
    if json {
        output::json(&top_up);
    } else if let Some(transfer) = &top_up.transfer {
        println!(
            "topped up {} (transaction {}, transfer {})",
            tokens_of(&transfer.amount),
            top_up.transaction,
            transfer.id
        );
    } else {
        println!(
            "paid in transaction {}; your balance is credited once it is final (vitrine balance)",
            top_up.transaction
        );
    }
    Ok(())
}

/// `vitrine address prove | list`.
async fn run_address(client: &Client, json: bool, command: AddressCommand) -> anyhow::Result<()> {
    client.require_key()?;
    let view = |address: &server::wire::AddressView| {
        format!("{} on {} (proven {})", address.address, address.network, address.proven_at)
    };
    match command {
        AddressCommand::Prove { wallet_key_file } => {
            let wallet = chain::read_key(&wallet_key_file)?;
            let challenge: server::wire::ChallengeView =
                client.send_as(client.request(Method::GET, "/v1/account/addresses/challenge")).await?;
            let signature = chain::deposits::sign_message(&wallet, &challenge.message).map_err(anyhow::Error::msg)?;
            let body = json!({"address": chain::x402::lower(wallet.address()), "signature": signature});
            let proven: server::wire::AddressView =
                client.send_as(client.request(Method::POST, "/v1/account/addresses").json(&body)).await?;
            if json {
                output::json(&proven);
            } else {
                println!(
                    "proved {}: its transfers of the market's token to the market are your deposits",
                    view(&proven)
                );
            }
        }
        AddressCommand::List => {
            let list: server::wire::AddressList =
                client.send_as(client.request(Method::GET, "/v1/account/addresses")).await?;
            if json {
                output::json(&list);
            } else if list.items.is_empty() {
                println!("no address proved yet (vitrine address prove --wallet-key-file FILE)");
            } else {
                list.items.iter().for_each(|address| println!("{}", view(address)));
            }
        }
    }
    Ok(())
}
