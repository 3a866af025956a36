use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "an account name is 2 to 32 characters: lowercase letters, digits and single dashes, starting with a letter and not ending with a dash"
    )]
    BadAccountName,
    #[error("the account name '{0}' is reserved")]
    ReservedAccountName(String),
    #[error(
        "a model name is 1 to 64 characters: lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
    )]
    BadModelName,
    #[error("a model is named 'owner/name'")]
    BadModelRef,
    #[error("a tag is 1 to 32 characters: lowercase letters, digits and '-'; '{0}' is not")]
    BadTag(String),
    #[error("a model has at most {TAGS_MAX} tags")]
    TooManyTags,
    #[error("a licence is at most {LICENSE_CHARS_MAX} printable characters")]
    BadLicense,
    #[error("a description is at most {DESCRIPTION_BYTES_MAX} bytes of Markdown")]
    DescriptionTooLong,
}

/// Tags a model may carry.
pub const TAGS_MAX: usize = 16;
/// Characters in a licence name or SPDX expression.
pub const LICENSE_CHARS_MAX: usize = 64;
/// Bytes of a model's Markdown description (its card).
pub const DESCRIPTION_BYTES_MAX: usize = 64 * 1024;

/// A model's tags: each well-formed, no duplicates, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Vec<String>);

impl Tags {
    pub fn parse<S: AsRef<str>>(tags: &[S]) -> Result<Tags, NameError> {
        let mut kept: Vec<String> = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = tag.as_ref();
            let well_formed = (1..=32).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !well_formed {
                return Err(NameError::BadTag(tag.to_owned()));
            }
            if !kept.iter().any(|k| k == tag) {
                kept.push(tag.to_owned());
            }
        }
        if kept.len() > TAGS_MAX {
            return Err(NameError::TooManyTags);
        }
        Ok(Tags(kept))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A licence name, such as an SPDX identifier ("apache-2.0", "MIT").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct License(String);

impl License {
    pub fn parse(text: &str) -> Result<License, NameError> {
        if text.chars().count() > LICENSE_CHARS_MAX || text.chars().any(char::is_control) {
            return Err(NameError::BadLicense);
        }
        Ok(License(text.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A model's Markdown description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description, NameError> {
        if text.len() > DESCRIPTION_BYTES_MAX {
            return Err(NameError::DescriptionTooLong);
        }
        Ok(Description(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names the server itself uses for its own accounts; nobody can sign up as one.
const RESERVED_ACCOUNT_NAMES: &[&str] =
    &["admin", "issuer", "operator", "payouts", "root", "system", "treasury", "vitrine"];
/// Serving nodes' accounts are named `node-<node id>`.
pub const NODE_ACCOUNT_PREFIX: &str = "node-";

/// An account's name: the `owner` in `owner/name`, so it is part of URLs and
/// must stay URL-safe and unambiguous (no case variants, no double dashes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

impl AccountName {
    /// Parses a name a person asks for, refusing reserved names.
    pub fn parse_new(text: &str) -> Result<AccountName, NameError> {
        let name = text.parse::<AccountName>()?;
        if RESERVED_ACCOUNT_NAMES.contains(&name.as_str()) || name.0.starts_with(NODE_ACCOUNT_PREFIX) {
            return Err(NameError::ReservedAccountName(name.0));
        }
        Ok(name)
    }

    /// The operator's account, created by the server at first start.
    pub fn operator() -> AccountName {
        AccountName("operator".to_owned())
    }

    /// The ledger's outside world: deposits come from it, payouts go to it.
    pub fn issuer() -> AccountName {
        AccountName("issuer".to_owned())
    }

    /// Where the treasury's share of every paid inference goes.
    pub fn treasury() -> AccountName {
        AccountName("treasury".to_owned())
    }

    /// Holds the tokens of requested payouts until the operator resolves them.
    pub fn payouts() -> AccountName {
        AccountName("payouts".to_owned())
    }

    /// The account of the serving node `node_id`, if that makes a valid name.
    pub fn node(node_id: &str) -> Result<AccountName, NameError> {
        format!("{NODE_ACCOUNT_PREFIX}{node_id}").parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountName {
    type Err = NameError;

    /// Parses any well-formed name, reserved ones included (they name real
    /// accounts once they exist).
    fn from_str(text: &str) -> Result<AccountName, NameError> {
        let bytes = text.as_bytes();
        let well_formed = (2..=32).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1] != b'-'
            && !text.contains("--")
            && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(NameError::BadAccountName);
        }
        Ok(AccountName(text.to_owned()))
    }
}

/// A model repository's name within its owner's namespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(String);

impl ModelName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModelName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<ModelName, NameError> {
        let bytes = text.as_bytes();
        // ".." is refused anywhere so that a name can never look like a path step.
        let well_formed = (1..=64).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && !text.contains("..")
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.');
        if !well_formed {
            return Err(NameError::BadModelName);
        }
        Ok(ModelName(text.to_owned()))
    }
}

/// A model repository's full name, `owner/name`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelRef {
    pub owner: AccountName,
    pub name: ModelName,
}

impl FromStr for ModelRef {
    type Err = NameError;

    fn from_str(text: &str) -> Result<ModelRef, NameError> {
        let (owner, name) = text.split_once('/').ok_or(NameError::BadModelRef)?;
        Ok(ModelRef { owner: owner.parse()?, name: name.parse()? })
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    )*};
}
display_as_str!(AccountName, ModelName);

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// What a model does. A fixed list, so that demand and supply can be compared
/// per task; `Other` takes what fits nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    Classification,
    Regression,
    Embedding,
    Forecasting,
    Detection,
    Segmentation,
    Generation,
    Other,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown task '{0}'; the tasks are: {list}", list = Task::ALL.map(Task::as_str).join(", "))]
pub struct TaskError(String);

impl Task {
    pub const ALL: [Task; 8] = [
        Task::Classification,
        Task::Regression,
        Task::Embedding,
        Task::Forecasting,
        Task::Detection,
        Task::Segmentation,
        Task::Generation,
        Task::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::Embedding => "embedding",
            Task::Forecasting => "forecasting",
            Task::Detection => "detection",
            Task::Segmentation => "segmentation",
            Task::Generation => "generation",
            Task::Other => "other",
        }
    }
}

impl FromStr for Task {
    type Err = TaskError;

    fn from_str(text: &str) -> Result<Task, TaskError> {
        Task::ALL.into_iter().find(|task| task.as_str() == text).ok_or_else(|| TaskError(text.to_owned()))
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who can see a model. A private model is invisible (404, not 403) to
/// everyone but its owner, so its existence does not leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

impl FromStr for Visibility {
    type Err = String;

    fn from_str(text: &str) -> Result<Visibility, String> {
        match text {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            _ => Err(format!("visibility is 'public' or 'private', not '{text}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for good in ["al", "alice", "bob-2", "a1234567890123456789012345678901"] {
            assert!(AccountName::parse_new(good).is_ok(), "{good}");
        }
        for bad in
            ["", "a", "Alice", "1bob", "bob-", "bo--b", "bo_b", "bob/x", "a12345678901234567890123456789012", "é"]
        {
            assert_eq!(AccountName::parse_new(bad), Err(NameError::BadAccountName), "{bad}");
        }
        assert!(matches!(AccountName::parse_new("operator"), Err(NameError::ReservedAccountName(_))));
        assert!(matches!(AccountName::parse_new("node-7"), Err(NameError::ReservedAccountName(_))));
        assert_eq!(AccountName::node("local").unwrap().as_str(), "node-local");
        assert_eq!("operator".parse::<AccountName>(), Ok(AccountName::operator()));
    }

    #[test]
    fn model_names_and_refs() {
        for good in ["m", "resnet-50", "gpt_2.onnx", "7b"] {
            assert!(good.parse::<ModelName>().is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a..b", "A", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(bad.parse::<ModelName>(), Err(NameError::BadModelName), "{bad}");
        }
        let r: ModelRef = "alice/linear".parse().unwrap();
        assert_eq!(r.to_string(), "alice/linear");
        assert_eq!("alice".parse::<ModelRef>(), Err(NameError::BadModelRef));
        assert!("alice/b/c".parse::<ModelRef>().is_err());
    }

    #[test]
    fn tags_licences_descriptions() {
        assert_eq!(Tags::parse(&["a", "b-2", "a"]).unwrap().as_slice(), ["a", "b-2"]);
        assert_eq!(Tags::parse(&["Bad"]), Err(NameError::BadTag("Bad".into())));
        assert_eq!(Tags::parse(&[""]), Err(NameError::BadTag("".into())));
        let many: Vec<String> = (0..=TAGS_MAX).map(|i| format!("t{i}")).collect();
        assert_eq!(Tags::parse(&many), Err(NameError::TooManyTags));
        assert!(License::parse("Apache-2.0").is_ok());
        assert_eq!(License::parse("a\nb"), Err(NameError::BadLicense));
        assert_eq!(Description::parse(&"x".repeat(DESCRIPTION_BYTES_MAX + 1)), Err(NameError::DescriptionTooLong));
    }

    #[test]
    fn tasks_round_trip() {
        for task in Task::ALL {
            assert_eq!(task.as_str().parse::<Task>(), Ok(task));
        }
        let error = "vision".parse::<Task>().unwrap_err().to_string();
        assert!(error.contains("classification") && error.contains("other"), "{error}");
    }
}
