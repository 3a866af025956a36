//! The model registry: repositories, versions (uploads) and blobs.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{AccountName, Amount, Description, License, ModelName, Sha256, Tags, Task, Visibility};
use store::{Account, Cursor, ModelFilter, ModelPatch, ModelRecord, ModelSort, NewModel};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, Caller, MaybeCaller};
use crate::wire::{
    CreateModelRequest, DeletedModelView, ListModelsQuery, ModelPage, ModelView, UpdateModelRequest, VersionList,
    VersionView, YankRequest,
};

/// Finds a model the viewer may see. A private model of someone else is
/// reported exactly like a missing one (404), so its existence does not leak;
/// so is a name that cannot exist. A deleted model is gone (410) for
/// everyone; a model taken down is gone for all but its owner and the
/// operator, who still see it (with the reason).
pub(crate) async fn visible_model(
    state: &AppState,
    owner: &str,
    name: &str,
    viewer: Option<&Account>,
) -> ApiResult<ModelRecord> {
    let (owner_name, model_name) = model_names(owner, name)?;
    let found = state.store.model(&owner_name, &model_name).await?;
    let model = visible_to(found, viewer, owner, name)?;
    check_deleted(&model)?;
    let owner_or_operator = viewer.is_some_and(|v| v.id == model.owner_id || v.is_operator);
    if !owner_or_operator {
        check_taken_down(&model)?;
    }
    Ok(model)
}

/// [`visible_model`] for a call: from memory when this node read it within
/// the last second (`known_models.rs`), else from the database. A model
/// deleted or taken down answers no call, its owner's included.
pub(crate) async fn callable_model(
    state: &AppState,
    owner: &str,
    name: &str,
    caller: &Account,
) -> ApiResult<ModelRecord> {
    let (owner_name, model_name) = model_names(owner, name)?;
    let found = state.market.known_models.model(&state.store, &owner_name, &model_name).await?;
    let model = visible_to(found, Some(caller), owner, name)?;
    check_deleted(&model)?;
    check_taken_down(&model)?;
    Ok(model)
}

fn model_not_found(owner: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("model '{owner}/{name}' not found"))
}

fn check_deleted(model: &ModelRecord) -> ApiResult<()> {
    match model.deleted_at_ms {
        Some(at) => Err(ApiError::gone(format!(
            "'{}/{}' was deleted by its owner on {}",
            model.owner,
            model.name,
            crate::wire::timestamp(at)
        ))),
        None => Ok(()),
    }
}

pub(crate) fn check_taken_down(model: &ModelRecord) -> ApiResult<()> {
    match &model.takedown {
        Some(takedown) => Err(ApiError::gone(format!(
            "'{}/{}' was taken down by the operator on {}: {}",
            model.owner,
            model.name,
            crate::wire::timestamp(takedown.since_ms),
            takedown.reason
        ))),
        None => Ok(()),
    }
}

/// Names that cannot exist name no model: 404, as for a missing one.
fn model_names(owner: &str, name: &str) -> ApiResult<(AccountName, ModelName)> {
    match (owner.parse::<AccountName>(), name.parse::<ModelName>()) {
        (Ok(owner_name), Ok(model_name)) => Ok((owner_name, model_name)),
        _ => Err(model_not_found(owner, name)),
    }
}

/// A private model is its owner's alone: to everyone else it does not exist.
fn visible_to(found: Option<ModelRecord>, viewer: Option<&Account>, owner: &str, name: &str) -> ApiResult<ModelRecord> {
    let model = found.ok_or_else(|| model_not_found(owner, name))?;
    let is_owner = viewer.is_some_and(|v| v.id == model.owner_id);
    if model.visibility == Visibility::Private && !is_owner {
        return Err(model_not_found(owner, name));
    }
    Ok(model)
}

/// Like [`visible_model`], and the caller must own it (403 otherwise).
pub(crate) async fn owned_model(state: &AppState, owner: &str, name: &str, caller: &Account) -> ApiResult<ModelRecord> {
    let model = visible_model(state, owner, name, Some(caller)).await?;
    if model.owner_id != caller.id {
        return Err(ApiError::forbidden(format!("only {} can change '{}/{}'", model.owner, model.owner, model.name)));
    }
    Ok(model)
}

fn invalid(error: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_request(error.to_string())
}

fn parse_price(text: &str) -> ApiResult<Amount> {
    Amount::parse_minor_units(text).map_err(|e| invalid(format!("price_per_inference: {e}")))
}

/// Creates a model repository owned by the caller; versions are uploaded next.
#[utoipa::path(post, path = "/v1/models", tag = "models",
    security(("api_key" = [])),
    request_body = CreateModelRequest,
    responses(
        (status = 201, body = ModelView),
        (status = 401, body = ErrorBody),
        (status = 409, description = "the caller has a model of that name, or had one and deleted it", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn create_model(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<CreateModelRequest>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let model = NewModel {
        name: request.name.parse::<ModelName>().map_err(invalid)?,
        description: Description::parse(&request.description).map_err(invalid)?,
        task: request.task.parse::<Task>().map_err(invalid)?,
        license: License::parse(&request.license).map_err(invalid)?,
        tags: Tags::parse(&request.tags).map_err(invalid)?,
        visibility: request.visibility.as_deref().unwrap_or("public").parse::<Visibility>().map_err(invalid)?,
        price_per_inference: request
            .price_per_inference
            .as_deref()
            .map(parse_price)
            .transpose()?
            .unwrap_or(Amount::ZERO),
    };
    let record = match state.store.create_model(&caller, &model).await {
        Err(store::StoreError::Conflict(what)) => {
            let existing = state.store.model(&caller.name, &model.name).await?;
            if existing.is_some_and(|m| m.deleted_at_ms.is_some()) {
                return Err(ApiError::conflict(format!(
                    "'{}/{}' was deleted, and a deleted model's name is not given out again \
                     (its receipts and history still name it)",
                    caller.name, model.name
                )));
            }
            return Err(store::StoreError::Conflict(what).into());
        }
        other => other?,
    };
    tracing::info!(model = %format!("{}/{}", record.owner, record.name), "model created");
    Ok((StatusCode::CREATED, Json(ModelView::for_viewer(&record, Some(&caller), &state.market.log_keys))))
}

/// Lists the models the caller may see: newest first, by name, or by usage
/// over a window (`popular`, `revenue`, `trending`).
#[utoipa::path(get, path = "/v1/models", tag = "models",
    params(ListModelsQuery),
    responses((status = 200, body = ModelPage), (status = 400, body = ErrorBody), (status = 401, description = "A key was sent and is not valid", body = ErrorBody)))]
pub async fn list_models(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    ApiQuery(query): ApiQuery<ListModelsQuery>,
) -> ApiResult<Json<ModelPage>> {
    let usage_order = match query.sort.as_deref() {
        Some("popular") => Some(UsageOrder::Calls),
        Some("revenue") => Some(UsageOrder::Revenue),
        Some("trending") => Some(UsageOrder::Growth),
        Some("price") => Some(UsageOrder::Price),
        _ => None,
    };
    let sort = match query.sort.as_deref() {
        None | Some("recent") | Some("popular" | "revenue" | "trending" | "price") => ModelSort::Recent,
        Some("name") => ModelSort::Name,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "sort is recent, name, popular, revenue, trending or price, not '{other}'"
            )));
        }
    };
    if query.window.is_some() && matches!(usage_order, None | Some(UsageOrder::Price)) {
        return Err(ApiError::bad_request("window applies to the usage sorts: popular, revenue and trending"));
    }
    let limit = query.limit.unwrap_or(state.config.page_size_default);
    if limit == 0 || limit > state.config.page_size_max {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and page_size_max = {}",
            state.config.page_size_max
        )));
    }
    let filter = ModelFilter {
        query: query.q.clone().filter(|q| !q.is_empty()),
        task: query
            .task
            .as_deref()
            .map(str::parse::<Task>)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        owner: match query.owner.as_deref() {
            // A name that cannot exist owns nothing: an empty page, not an error.
            Some(owner) => match owner.parse::<AccountName>() {
                Ok(name) => Some(name),
                Err(_) => return Ok(Json(ModelPage { items: vec![], next_page_token: None, corrected_query: None })),
            },
            None => None,
        },
        viewer_id: viewer.as_ref().map(|v| v.id),
    };
    // A query that matches nothing as written is mended to the nearest words
    // the catalogue has (a typo, a word cut short), and said so.
    let mut filter = filter;
    let mut corrected_query = None;
    if let Some(q) = filter.query.clone()
        && state.store.list_models(&filter, ModelSort::Recent, None, 1).await?.0.is_empty()
    {
        let vocabulary = search_vocabulary(&state).await?;
        if let Some(mended) = mend_query(&q, &vocabulary) {
            filter.query = Some(mended.clone());
            corrected_query = Some(mended);
        }
    }
    let mut page = list_models_filtered(&state, viewer.as_ref(), &filter, sort, usage_order, &query, limit).await?;
    page.0.corrected_query = corrected_query;
    Ok(page)
}

/// [`list_models`] once its query is parsed and mended.
async fn list_models_filtered(
    state: &AppState,
    viewer: Option<&Account>,
    filter: &ModelFilter,
    sort: ModelSort,
    usage_order: Option<UsageOrder>,
    query: &ListModelsQuery,
    limit: u32,
) -> ApiResult<Json<ModelPage>> {
    if let Some(order) = usage_order {
        return list_models_by_usage(
            state,
            viewer,
            filter,
            order,
            query.window.as_deref(),
            query.page_token.as_deref(),
            limit,
        )
        .await;
    }
    let cursor = match query.page_token.as_deref() {
        None => None,
        Some(token) => Some(
            Cursor::decode(token, sort)
                .ok_or_else(|| ApiError::bad_request("page_token is not valid for this sort"))?,
        ),
    };
    let (models, next) = state.store.list_models(filter, sort, cursor.as_ref(), limit).await?;
    Ok(Json(ModelPage {
        items: models.iter().map(|m| ModelView::for_viewer(m, viewer, &state.market.log_keys)).collect(),
        next_page_token: next.map(|c| c.encode()),
        corrected_query: None,
    }))
}

/// The words a catalogue query can be mended to (the tasks, and the words of
/// every listed model's name and owner), read again at most every
/// [`SEARCH_WORDS_TTL`]: a flood of queries that match nothing costs the
/// database one read a minute.
#[derive(Debug, Default)]
pub struct SearchWords(std::sync::Mutex<Option<(std::time::Instant, Arc<BTreeSet<String>>)>>);

/// How long the search words are used before they are read again.
const SEARCH_WORDS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Words of a query mended at most (the rest are kept as they are).
const MENDED_WORDS_MAX: usize = 8;

async fn search_vocabulary(state: &AppState) -> ApiResult<Arc<BTreeSet<String>>> {
    if let Some((read_at, words)) = state.search_words.0.lock().expect("not poisoned").as_ref()
        && read_at.elapsed() < SEARCH_WORDS_TTL
    {
        return Ok(words.clone());
    }
    let mut words: BTreeSet<String> = Task::ALL.iter().map(|t| t.as_str().to_owned()).collect();
    for (owner, name) in state.store.listed_model_names().await? {
        for text in [&owner, &name] {
            words.extend(text.split(['-', '_', '.', '/']).filter(|w| w.len() >= 3).map(str::to_lowercase));
        }
    }
    let words = Arc::new(words);
    *state.search_words.0.lock().expect("not poisoned") = Some((std::time::Instant::now(), words.clone()));
    Ok(words)
}

/// `query` with each word that is not in `vocabulary` (nor a prefix of one
/// of its words) replaced by the nearest word there, within a typo or two
/// (one edit per four letters, at least one); `None` when nothing changed.
pub(crate) fn mend_query(query: &str, vocabulary: &BTreeSet<String>) -> Option<String> {
    let mut changed = false;
    let mended: Vec<String> = query
        .split_whitespace()
        .enumerate()
        .map(|(i, word)| {
            let lower = word.to_lowercase();
            if i >= MENDED_WORDS_MAX || vocabulary.iter().any(|known| known.contains(&lower)) {
                return lower;
            }
            let length = lower.chars().count();
            let allowed = (length / 4).max(1);
            let nearest = vocabulary
                .iter()
                // Words of another length by more than the edits allowed are never near.
                .filter(|known| known.chars().count().abs_diff(length) <= allowed)
                .map(|known| (edit_distance(&lower, known), known))
                .filter(|(distance, _)| *distance <= allowed)
                .min();
            match nearest {
                Some((_, known)) => {
                    changed = true;
                    known.clone()
                }
                None => lower,
            }
        })
        .collect();
    changed.then(|| mended.join(" "))
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`:
/// the optimal string alignment distance.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[derive(Debug, Clone, Copy)]
enum UsageOrder {
    Calls,
    Revenue,
    Growth,
    /// Cheapest first; not a usage sort, but ranked the same way.
    Price,
}

/// Models matched by one usage sort at most; past this the catalogue is too
/// large to rank in one request and the answer is 503.
const USAGE_SORT_MODELS_MAX: usize = 100_000;

/// Usage sorts rank every matching model, so their pages are offsets
/// (`u<offset>`) into that ranking; ties go to the newer model.
async fn list_models_by_usage(
    state: &AppState,
    viewer: Option<&Account>,
    filter: &ModelFilter,
    order: UsageOrder,
    window: Option<&str>,
    page_token: Option<&str>,
    limit: u32,
) -> ApiResult<Json<ModelPage>> {
    let offset = match page_token {
        None => 0,
        Some(token) => token
            .strip_prefix('u')
            .and_then(|o| o.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("page_token is not valid for this sort"))?,
    };
    let usage = crate::routes::stats::usage_by_model(state, window).await?;
    let mut models = vec![];
    let mut cursor: Option<Cursor> = None;
    loop {
        let (page, next) = state.store.list_models(filter, ModelSort::Recent, cursor.as_ref(), 1000).await?;
        models.extend(page);
        if models.len() > USAGE_SORT_MODELS_MAX {
            return Err(ApiError::unavailable("too many models match to sort by usage; narrow the filter", 60));
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let score = |model: &ModelRecord| -> f64 {
        let usage = usage.get(&model.id).copied().unwrap_or_default();
        match order {
            UsageOrder::Calls => usage.calls as f64,
            UsageOrder::Revenue => usage.revenue as f64,
            UsageOrder::Growth => usage.growth.unwrap_or(f64::NEG_INFINITY),
            UsageOrder::Price => -(model.price_per_inference.minor_units() as f64),
        }
    };
    // `models` is newest first; a stable sort keeps that order among ties.
    models.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let page: Vec<ModelView> = models
        .iter()
        .skip(offset)
        .take(limit as usize)
        .map(|m| ModelView::for_viewer(m, viewer, &state.market.log_keys))
        .collect();
    let next_offset = offset + page.len();
    let next_page_token = (next_offset < models.len()).then(|| format!("u{next_offset}"));
    Ok(Json(ModelPage { items: page, next_page_token, corrected_query: None }))
}

#[utoipa::path(get, path = "/v1/models/{owner}/{name}", tag = "models",
    params(("owner" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ModelView), (status = 401, description = "A key was sent and is not valid", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 410, description = "deleted by its owner, or taken down by the operator (its owner and the operator still see it)", body = ErrorBody)))]
pub async fn get_model(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<ModelView>> {
    let model = visible_model(&state, &owner, &name, viewer.as_ref()).await?;
    Ok(Json(ModelView::for_viewer(&model, viewer.as_ref(), &state.market.log_keys)))
}

/// Changes any of the create fields but the name. A new price applies to
/// calls that start after the change.
#[utoipa::path(patch, path = "/v1/models/{owner}/{name}", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    request_body = UpdateModelRequest,
    responses(
        (status = 200, body = ModelView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "the model was deleted", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn update_model(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<UpdateModelRequest>,
) -> ApiResult<Json<ModelView>> {
    let model = owned_model(&state, &owner, &name, &caller).await?;
    let patch = ModelPatch {
        description: request.description.as_deref().map(Description::parse).transpose().map_err(invalid)?,
        task: request.task.as_deref().map(str::parse::<Task>).transpose().map_err(invalid)?,
        license: request.license.as_deref().map(License::parse).transpose().map_err(invalid)?,
        tags: request.tags.as_deref().map(Tags::parse).transpose().map_err(invalid)?,
        visibility: request.visibility.as_deref().map(str::parse::<Visibility>).transpose().map_err(invalid)?,
        price_per_inference: request.price_per_inference.as_deref().map(parse_price).transpose()?,
        listed: request.listed,
    };
    state.store.update_model(model.id, &patch).await?;
    state.market.known_models.forget_model(&model.owner, &model.name);
    let updated =
        state.store.model(&model.owner, &model.name).await?.ok_or_else(|| ApiError::internal("model vanished"))?;
    Ok(Json(ModelView::for_viewer(&updated, Some(&caller), &state.market.log_keys)))
}

#[utoipa::path(get, path = "/v1/models/{owner}/{name}/versions", tag = "models",
    params(("owner" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = VersionList), (status = 401, description = "A key was sent and is not valid", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 410, description = "the model was deleted or taken down", body = ErrorBody)))]
pub async fn list_versions(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<VersionList>> {
    let model = visible_model(&state, &owner, &name, viewer.as_ref()).await?;
    let versions = state.store.versions(model.id).await?;
    Ok(Json(VersionList { items: versions.iter().map(VersionView::from).collect() }))
}

/// Downloads a model file by its SHA-256, if some model the caller may see uses it.
#[utoipa::path(get, path = "/v1/blobs/{sha256}", tag = "models",
    params(("sha256" = String, Path, description = "64 lowercase hex digits")),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "A key was sent and is not valid", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the remote store of model files (blob_url) does not answer (unavailable, with Retry-After)", body = ErrorBody),
    ))]
pub async fn get_blob(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    Path(sha256): Path<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found(format!("blob {sha256} not found"));
    let digest: Sha256 = sha256.parse().map_err(|_| not_found())?;
    if !state.store.blob_visible(&digest, viewer.map(|v| v.id)).await? {
        return Err(not_found());
    }
    let file = state.blobs.open_blob(&digest).await?;
    let length = file.metadata().await?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, length.to_string()),
        (header::ETAG, format!("\"{digest}\"")),
    ];
    Ok((headers, body).into_response())
}

/// Removes from the blob folder those of `digests` that no model still
/// uses. Failures are logged, not answered: the file is only disk space.
pub(crate) async fn remove_unused_blobs(state: &AppState, digests: &[Sha256]) {
    let _alone = state.blob_removal.write().await;
    for digest in digests {
        let removed = match state.store.blob_in_use(digest).await {
            Ok(true) => continue,
            Ok(false) => state.blobs.remove(digest).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = removed {
            tracing::warn!(%digest, %error, "removing an unused model file failed");
        }
    }
}

/// Deletes a model (its owner only). From then on it answers 410 `gone`
/// and appears in no listing; its name is not given out again. Its history
/// stays: receipts, usage and earnings still name it. Files no other model
/// uses are removed, and no longer count against the owner's storage.
#[utoipa::path(delete, path = "/v1/models/{owner}/{name}", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, body = DeletedModelView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "deleted already", body = ErrorBody),
    ))]
pub async fn delete_model(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<DeletedModelView>> {
    let model = owned_model(&state, &owner, &name, &caller).await?;
    let used = state.store.delete_model(model.id).await?;
    state.market.known_models.forget_model(&model.owner, &model.name);
    remove_unused_blobs(&state, &used).await;
    tracing::info!(model = %format!("{}/{}", model.owner, model.name), "model deleted");
    Ok(Json(DeletedModelView {
        model: format!("{}/{}", model.owner, model.name),
        deleted_at: crate::wire::timestamp(store::now_ms()),
        storage_bytes: state.store.storage_used(caller.id).await?,
    }))
}

/// One version of a model.
#[utoipa::path(get, path = "/v1/models/{owner}/{name}/versions/{version}", tag = "models",
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path)),
    responses(
        (status = 200, body = VersionView),
        (status = 401, description = "A key was sent and is not valid", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "the model was deleted or taken down", body = ErrorBody),
    ))]
pub async fn get_version(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    Path((owner, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<VersionView>> {
    let model = visible_model(&state, &owner, &name, viewer.as_ref()).await?;
    let version = find_version(&state, &model, &version).await?;
    Ok(Json(VersionView::from(&version)))
}

async fn find_version(state: &AppState, model: &ModelRecord, version: &str) -> ApiResult<store::Version> {
    let not_found = || ApiError::not_found(format!("'{}/{}' has no version {version}", model.owner, model.name));
    let number = version.parse::<i64>().map_err(|_| not_found())?;
    state.store.version(model.id, number).await?.ok_or_else(not_found)
}

/// Yanks a version, or puts it back (its owner only). A yanked version
/// answers its calls 410 `gone` with the reason, and the model's latest
/// version is the newest one not yanked; the file stays, as do its
/// receipts and usage.
#[utoipa::path(patch, path = "/v1/models/{owner}/{name}/versions/{version}", tag = "models",
    security(("api_key" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("version" = i64, Path)),
    request_body = YankRequest,
    responses(
        (status = 200, body = VersionView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 410, description = "the model was deleted", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn yank_version(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<YankRequest>,
) -> ApiResult<Json<VersionView>> {
    let model = owned_model(&state, &owner, &name, &caller).await?;
    let found = find_version(&state, &model, &version).await?;
    let reason = match (request.yanked, request.reason.as_deref().map(str::trim)) {
        (false, Some(reason)) if !reason.is_empty() => {
            return Err(ApiError::invalid_request("a reason goes with \"yanked\": true only"));
        }
        (false, _) => None,
        (true, reason) => Some(crate::routes::quarantine::check_reason(reason.unwrap_or(""), true)?),
    };
    state.store.set_yank(model.id, found.version, reason).await?;
    state.market.known_models.forget_version(model.id, found.version);
    state.market.known_models.forget_model(&model.owner, &model.name);
    let label = format!("{}/{}@{}", model.owner, model.name, found.version);
    tracing::info!(model = %label, yanked = request.yanked, "version yank changed");
    let version = find_version(&state, &model, &version).await?;
    Ok(Json(VersionView::from(&version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_count_typos_as_people_make_them() {
        assert_eq!(edit_distance("segmentaion", "segmentation"), 1, "two letters swapped");
        assert_eq!(edit_distance("clasification", "classification"), 1);
        assert_eq!(edit_distance("detecton", "detection"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn a_query_is_mended_to_the_nearest_words_only_when_close() {
        let vocabulary: BTreeSet<String> =
            ["segmentation", "detection", "studio", "linear"].into_iter().map(String::from).collect();
        assert_eq!(mend_query("segmentaion", &vocabulary).as_deref(), Some("segmentation"));
        assert_eq!(mend_query("Detecton", &vocabulary).as_deref(), Some("detection"));
        // A known word, or a word cut short, is left as it is.
        assert_eq!(mend_query("segment", &vocabulary), None);
        assert_eq!(mend_query("linear", &vocabulary), None);
        // Too far from every word: nothing is made up.
        assert_eq!(mend_query("weather", &vocabulary), None);
        assert_eq!(mend_query("zzz", &vocabulary), None);
    }
}
