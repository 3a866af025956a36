//! Vitrine's value types. Each type can only hold a valid value: its
//! constructor (`parse`, `new`) is the one way in, so code that receives one
//! never checks it again ("parse, don't validate").
//!
//! This crate knows nothing about I/O, SQL or HTTP, and its types carry no
//! `Serialize`: wire formats live with the HTTP layer.

mod api_key;
mod hash;
mod money;
mod names;
mod tensor;

pub use api_key::{API_KEY_PREFIX, ApiKey, ApiKeyError};
pub use hash::{Sha256, Sha256Error};
pub use money::{Amount, AmountError, DEFAULT_DECIMALS, DEFAULT_TOKEN_SYMBOL};
pub use names::{
    AccountName, DESCRIPTION_BYTES_MAX, Description, LICENSE_CHARS_MAX, License, ModelName, ModelRef,
    NODE_ACCOUNT_PREFIX, NameError, TAGS_MAX, Tags, Task, TaskError, Visibility,
};
pub use tensor::{Dim, Dtype, DtypeError, TensorSpec};
