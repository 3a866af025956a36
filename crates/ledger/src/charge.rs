//! Who pays whom for one paid call: the rule, as a pure function.

use domain::Amount;

use crate::{AccountId, Shares, Transfer, TransferKind};

/// The accounts a paid call's money moves between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeParties {
    pub caller: AccountId,
    /// The model's owner.
    pub creator: AccountId,
    /// The serving node's account.
    pub node: AccountId,
    pub treasury: AccountId,
}

/// The transfers that charge one paid call, all from the caller: the
/// creator's, the node's and the treasury's shares of the price. A creator
/// calling their own model would pay their share to themselves, so that
/// transfer is left out and the call costs them the other two shares only.
/// A share of zero moves nothing and is left out too. Applied together
/// (`Command::Linked`), all or none.
pub fn charge_transfers(parties: ChargeParties, shares: Shares, reference: &str) -> Vec<Transfer> {
    let legs = [
        (parties.creator, shares.creator, TransferKind::InferenceCreator),
        (parties.node, shares.node, TransferKind::InferenceNode),
        (parties.treasury, shares.treasury, TransferKind::InferenceTreasury),
    ];
    legs.into_iter()
        .filter(|&(credit, amount, _)| amount > Amount::ZERO && credit != parties.caller)
        .map(|(credit, amount, kind)| Transfer {
            debit: parties.caller,
            credit,
            amount,
            kind,
            reference: reference.to_owned(),
        })
        .collect()
}

/// What a call charged with [`charge_transfers`] costs its caller.
pub fn charged(transfers: &[Transfer]) -> u64 {
    transfers.iter().map(|t| t.amount.minor_units()).sum()
}
