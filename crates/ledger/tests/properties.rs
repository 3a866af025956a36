//! Random sequences of ledger commands, retries included. After every step:
//! debits equal credits, no regular account is below zero, pending totals
//! match the holds, a failed command changed nothing, and every hold is
//! resolved at most once.

use domain::Amount;
use ledger::{
    AccountKind, AccountState, ChargeParties, Command, FeeSplit, GrantAsk, Hold, HoldId, LedgerError, LedgerState, Leg,
    Transfer, TransferKind, charge_transfers, charged, grant_size,
};
use proptest::prelude::*;

const ISSUER: i64 = 0;
const TREASURY: i64 = 1;
const NODE: i64 = 2;
const PAYOUTS: i64 = 3;
const USERS: [i64; 4] = [10, 11, 12, 13];

fn amount(units: u64) -> Amount {
    Amount::from_minor_units(units).unwrap()
}

#[derive(Debug, Clone)]
enum Step {
    Deposit {
        user: usize,
        units: u64,
    },
    /// Retries the n-th deposit by its id: unchanged, or with another amount.
    RetryDeposit {
        nth: usize,
        same: bool,
    },
    Pay {
        from: usize,
        to: usize,
        units: u64,
    },
    Reserve {
        hold: i64,
        user: usize,
        units: u64,
        ttl_ms: i64,
    },
    Post {
        hold: i64,
        creator: usize,
    },
    PostWrongAmount {
        hold: i64,
    },
    /// A paid call charged from part of a hold (a node's grant).
    Draw {
        hold: i64,
        creator: usize,
        units: u64,
    },
    Void {
        hold: i64,
    },
    Grant {
        hold: HoldId,
        user: usize,
        want: u64,
        price: u64,
        live_nodes: u64,
    },
    DrawOrPay {
        hold: HoldId,
        caller: usize,
        creator: usize,
        units: u64,
    },
    Expire,
    Tick {
        ms: i64,
    },
    PayoutRequest {
        user: usize,
        units: u64,
    },
    PayoutComplete {
        units: u64,
    },
    PayoutReject {
        user: usize,
        units: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let user = 0..USERS.len();
    // Mostly small amounts, and some at the very top of what the ledger
    // holds, so that running totals reach their limit and must be refused.
    let max = Amount::MAX.minor_units();
    let units = prop_oneof![8 => 1u64..2_000, 1 => Just(max), 1 => (max - 2_000)..max];
    let hold = 1i64..12;
    prop_oneof![
        (user.clone(), units.clone()).prop_map(|(user, units)| Step::Deposit { user, units }),
        (0usize..8, any::<bool>()).prop_map(|(nth, same)| Step::RetryDeposit { nth, same }),
        (user.clone(), user.clone(), units.clone()).prop_map(|(from, to, units)| Step::Pay { from, to, units }),
        (hold.clone(), user.clone(), units.clone(), 1i64..50).prop_map(|(hold, user, units, ttl_ms)| Step::Reserve {
            hold,
            user,
            units,
            ttl_ms
        }),
        (hold.clone(), user.clone()).prop_map(|(hold, creator)| Step::Post { hold, creator }),
        hold.clone().prop_map(|hold| Step::PostWrongAmount { hold }),
        (hold.clone(), user.clone(), prop_oneof![4 => 1u64..400, 1 => units.clone()])
            .prop_map(|(hold, creator, units)| Step::Draw { hold, creator, units }),
        (hold.clone(), user.clone(), 0u64..5_000, 1u64..300, 1u64..4)
            .prop_map(|(hold, user, want, price, live_nodes)| { Step::Grant { hold, user, want, price, live_nodes } }),
        (hold.clone(), user.clone(), user.clone(), prop_oneof![4 => 1u64..400, 1 => units.clone()])
            .prop_map(|(hold, caller, creator, units)| Step::DrawOrPay { hold, caller, creator, units }),
        hold.prop_map(|hold| Step::Void { hold }),
        Just(Step::Expire),
        (1i64..20).prop_map(|ms| Step::Tick { ms }),
        (user.clone(), units.clone()).prop_map(|(user, units)| Step::PayoutRequest { user, units }),
        units.clone().prop_map(|units| Step::PayoutComplete { units }),
        (user, units).prop_map(|(user, units)| Step::PayoutReject { user, units }),
    ]
}

fn fresh() -> LedgerState {
    let mut state = LedgerState::default();
    state.accounts.insert(ISSUER, AccountState::new(AccountKind::Issuer));
    for id in [TREASURY, NODE, PAYOUTS].into_iter().chain(USERS) {
        state.accounts.insert(id, AccountState::new(AccountKind::Regular));
    }
    state
}

fn transfer(debit: i64, credit: i64, units: u64, kind: TransferKind) -> Command {
    Command::Transfer(Transfer { debit, credit, amount: amount(units), kind, reference: String::new() })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step(steps in proptest::collection::vec(step(), 1..80)) {
        let split = FeeSplit::new(8000, 1500, 500).unwrap();
        let mut state = fresh();
        let mut now = 0i64;
        let mut deposited: u128 = 0;
        let mut deposits: Vec<(String, Transfer)> = vec![];
        let mut paid_out: u128 = 0;
        for step in steps {
            let before = state.clone();
            let command = match &step {
                Step::Deposit { user, units } => {
                    let id = format!("wire-{}", deposits.len());
                    let transfer = Transfer { debit: ISSUER, credit: USERS[*user], amount: amount(*units), kind: TransferKind::Deposit, reference: id.clone() };
                    deposits.push((id.clone(), transfer.clone()));
                    Some(Command::Once { id, transfer })
                }
                Step::RetryDeposit { nth, same } => deposits.get(*nth).map(|(id, transfer)| {
                    let mut transfer = transfer.clone();
                    if !same {
                        let units = transfer.amount.minor_units();
                        transfer.amount = amount(if units == Amount::MAX.minor_units() { units - 1 } else { units + 1 });
                    }
                    Command::Once { id: id.clone(), transfer }
                }),
                Step::Pay { from, to, units } => Some(transfer(USERS[*from], USERS[*to], *units, TransferKind::InferenceCreator)),
                Step::Reserve { hold, user, units, ttl_ms } => Some(Command::Reserve(Hold {
                    id: *hold, account: USERS[*user], amount: amount(*units), expires_at_ms: now + ttl_ms,
                })),
                Step::Post { hold, creator } => state.holds.get(hold).map(|placed| {
                    let shares = split.split(placed.amount);
                    Command::Post {
                        hold: *hold,
                        legs: vec![
                            Leg { credit: USERS[*creator], amount: shares.creator, kind: TransferKind::InferenceCreator },
                            Leg { credit: NODE, amount: shares.node, kind: TransferKind::InferenceNode },
                            Leg { credit: TREASURY, amount: shares.treasury, kind: TransferKind::InferenceTreasury },
                        ],
                        reference: format!("hold {hold}"),
                    }
                }).or(Some(Command::Post { hold: *hold, legs: vec![], reference: String::new() })),
                Step::PostWrongAmount { hold } => state.holds.get(hold).map(|placed| Command::Post {
                    hold: *hold,
                    legs: vec![Leg { credit: NODE, amount: amount(placed.amount.minor_units() ^ 1), kind: TransferKind::InferenceNode }],
                    reference: String::new(),
                }),
                Step::Draw { hold, creator, units } => {
                    // Drawn from the hold's own account when it exists; else from anyone's, to be refused.
                    let caller = state.holds.get(hold).map_or(USERS[0], |h| h.account);
                    let parties = ChargeParties { caller, creator: USERS[*creator], node: NODE, treasury: TREASURY };
                    Some(Command::Draw { hold: *hold, transfers: charge_transfers(parties, split.split(amount(*units)), "draw") })
                }
                Step::Grant { hold, user, want, price, live_nodes } => Some(Command::Grant {
                    hold: *hold,
                    account: USERS[*user],
                    ask: GrantAsk { want: *want, price: *price, live_nodes: *live_nodes },
                    expires_at_ms: now + 30,
                }),
                Step::DrawOrPay { hold, caller, creator, units } => {
                    // The hold's own account when it exists, as a grant's calls are.
                    let caller = state.holds.get(hold).map_or(USERS[*caller], |h| h.account);
                    let parties = ChargeParties { caller, creator: USERS[*creator], node: NODE, treasury: TREASURY };
                    Some(Command::DrawOrPay { hold: *hold, transfers: charge_transfers(parties, split.split(amount(*units)), "call") })
                }
                Step::Void { hold } => Some(Command::Void { hold: *hold }),
                Step::Expire => {
                    for id in state.expire_holds(now) {
                        // Only live holds expire, each once.
                        prop_assert!(before.holds.contains_key(&id) && !state.holds.contains_key(&id));
                    }
                    None
                }
                Step::Tick { ms } => { now += ms; None }
                Step::PayoutRequest { user, units } => Some(transfer(USERS[*user], PAYOUTS, *units, TransferKind::PayoutRequest)),
                Step::PayoutComplete { units } => Some(transfer(PAYOUTS, ISSUER, *units, TransferKind::PayoutComplete)),
                Step::PayoutReject { user, units } => Some(transfer(PAYOUTS, USERS[*user], *units, TransferKind::PayoutReject)),
            };
            if let Some(command) = command {
                let hold_id = match &command { Command::Post { hold, .. } | Command::Void { hold } => Some(*hold), _ => None };
                match state.execute(command.clone(), now) {
                    Ok(effects) => {
                        if let Some(id) = effects.hold_resolved {
                            // A hold resolves at most once: the id was live before and is gone now.
                            prop_assert!(before.holds.contains_key(&id));
                            prop_assert!(!state.holds.contains_key(&id));
                        }
                        if let Some(id) = hold_id {
                            prop_assert!(effects.hold_resolved == Some(id));
                            // Retrying the same resolution is refused and changes nothing.
                            let after = state.clone();
                            prop_assert_eq!(state.execute(command.clone(), now), Err(LedgerError::UnknownHold(id)));
                            prop_assert_eq!(&state, &after);
                        }
                        if let Command::Draw { hold, transfers } = &command {
                            // The hold shrank by exactly what moved, and is gone once empty.
                            let drawn = charged(transfers);
                            let left = before.holds[hold].amount.minor_units() - drawn;
                            prop_assert_eq!(state.holds.get(hold).map_or(0, |h| h.amount.minor_units()), left);
                            prop_assert_eq!(effects.hold_resolved == Some(*hold), left == 0);
                            prop_assert_eq!(effects.hold_drawn.is_some(), left > 0);
                            prop_assert!(now < before.holds[hold].expires_at_ms);
                        }
                        if let Command::Grant { hold, account, ask, .. } = &command {
                            // As large as the ledger's rule allows on the balance before, in whole prices.
                            let size = grant_size(*ask, before.accounts[account].available());
                            prop_assert_eq!(Some(state.holds[hold].amount.minor_units()), size);
                            prop_assert_eq!(size.unwrap_or(0) % ask.price, 0);
                            prop_assert_eq!(effects.hold_placed.as_ref().map(|h| h.id), Some(*hold));
                        }
                        if let Command::DrawOrPay { hold, transfers } = &command {
                            // From the hold when it covers the call, else from the free balance.
                            let drawn = charged(transfers);
                            let covers = before.holds.get(hold).is_some_and(|h| {
                                now < h.expires_at_ms && transfers.iter().all(|t| t.debit == h.account) && h.amount.minor_units() >= drawn
                            });
                            let left = |s: &LedgerState| s.holds.get(hold).map_or(0, |h| h.amount.minor_units());
                            if covers {
                                prop_assert_eq!(left(&state), left(&before) - drawn);
                            } else {
                                prop_assert_eq!(left(&state), left(&before));
                                prop_assert!(effects.hold_drawn.is_none() && effects.hold_resolved.is_none());
                            }
                            prop_assert_eq!(charged(&effects.transfers), drawn);
                        }
                        if let Step::Reserve { .. } = step {
                            // Retrying the same reservation is refused and changes nothing.
                            let after = state.clone();
                            prop_assert!(matches!(state.execute(command, now), Err(LedgerError::DuplicateHold(_))));
                            prop_assert_eq!(&state, &after);
                        }
                        if let Step::RetryDeposit { same, .. } = step {
                            // A retried id changes nothing.
                            prop_assert!(same && effects.replayed && effects.transfers.is_empty());
                            prop_assert_eq!(&state, &before);
                        }
                        match step {
                            Step::Deposit { units, .. } => deposited += units as u128,
                            Step::PayoutComplete { units } => paid_out += units as u128,
                            _ => {}
                        }
                    }
                    Err(error) => {
                        prop_assert_eq!(&state, &before, "a failed command changed the state");
                        if let Command::Grant { account, ask, .. } = &command
                            && !matches!(error, LedgerError::DuplicateHold(_))
                        {
                            // Refused only below one price.
                            prop_assert_eq!(grant_size(*ask, before.accounts[account].available()), None);
                        }
                        if let Command::DrawOrPay { .. } = &command {
                            // Refused only when the free balance cannot pay either (or the hold is another's).
                            prop_assert!(matches!(error, LedgerError::InsufficientBalance { .. } | LedgerError::Overflow | LedgerError::NotTheHoldsAccount { .. }), "{error:?}");
                        }
                    }
                }
            }
            state.check_invariants().map_err(TestCaseError::fail)?;
            prop_assert_eq!(ledger::net_change(&before.accounts, &state.accounts), 0);
            // Tokens enter only by deposit and leave only by completed payout.
            let in_circulation: i128 = state.accounts.iter().filter(|(id, _)| **id != ISSUER).map(|(_, a)| a.balance()).sum();
            prop_assert_eq!(in_circulation, deposited as i128 - paid_out as i128);
            prop_assert_eq!(-state.accounts[&ISSUER].balance(), in_circulation);
        }
    }
}

#[test]
fn a_grant_pays_calls_one_by_one_until_it_is_empty() {
    let mut state = fresh();
    state.execute(transfer(ISSUER, USERS[0], 100, TransferKind::Deposit), 0).unwrap();
    let grant = Hold { id: 7, account: USERS[0], amount: amount(25), expires_at_ms: 50 };
    state.execute(Command::Reserve(grant), 0).unwrap();
    // What the grant holds is spent by nobody else.
    assert_eq!(state.accounts[&USERS[0]].available(), 75);
    let call = |caller: i64, units: u64| {
        let parties = ChargeParties { caller, creator: USERS[1], node: NODE, treasury: TREASURY };
        charge_transfers(parties, FeeSplit::new(8000, 1500, 500).unwrap().split(amount(units)), "call")
    };
    let effects = state.execute(Command::Draw { hold: 7, transfers: call(USERS[0], 10) }, 1).unwrap();
    assert_eq!(effects.hold_drawn.map(|h| h.amount), Some(amount(15)));
    assert_eq!(state.accounts[&USERS[0]].balance(), 90);
    assert_eq!(state.accounts[&USERS[0]].available(), 75);
    // More than is left, or from another account, is refused and changes nothing.
    let before = state.clone();
    let too_much = state.execute(Command::Draw { hold: 7, transfers: call(USERS[0], 16) }, 2);
    assert_eq!(too_much, Err(LedgerError::HoldTooSmall { hold: 7, left: 15, needed: 16 }));
    let other = state.execute(Command::Draw { hold: 7, transfers: call(USERS[2], 1) }, 2);
    assert_eq!(other, Err(LedgerError::NotTheHoldsAccount { hold: 7 }));
    assert_eq!(state, before);
    // The last of it resolves the hold.
    let effects = state.execute(Command::Draw { hold: 7, transfers: call(USERS[0], 15) }, 3).unwrap();
    assert_eq!(effects.hold_resolved, Some(7));
    assert!(state.holds.is_empty());
    assert_eq!(state.accounts[&USERS[0]].available(), 75);
    // (80% of each price, and what rounding leaves: 9 + 13.)
    assert_eq!(state.accounts[&USERS[1]].balance(), 22);
    state.check_invariants().unwrap();
    // An expired grant pays nothing.
    state
        .execute(Command::Reserve(Hold { id: 8, account: USERS[0], amount: amount(5), expires_at_ms: 10 }), 3)
        .unwrap();
    assert_eq!(
        state.execute(Command::Draw { hold: 8, transfers: call(USERS[0], 1) }, 10),
        Err(LedgerError::HoldExpired(8))
    );
}

#[test]
fn an_expired_hold_cannot_be_posted_and_releases_its_tokens() {
    let mut state = fresh();
    state.execute(transfer(ISSUER, USERS[0], 100, TransferKind::Deposit), 0).unwrap();
    state
        .execute(Command::Reserve(Hold { id: 1, account: USERS[0], amount: amount(60), expires_at_ms: 10 }), 0)
        .unwrap();
    assert!(matches!(
        state.execute(Command::Reserve(Hold { id: 2, account: USERS[0], amount: amount(60), expires_at_ms: 10 }), 0),
        Err(LedgerError::InsufficientBalance { available: 40, needed: 60, .. })
    ));
    let legs = vec![Leg { credit: USERS[1], amount: amount(60), kind: TransferKind::InferenceCreator }];
    let post = Command::Post { hold: 1, legs, reference: String::new() };
    assert_eq!(state.execute(post, 10), Err(LedgerError::HoldExpired(1)));
    assert_eq!(state.expire_holds(10), vec![1]);
    assert_eq!(state.accounts[&USERS[0]].available(), 100);
}

#[test]
fn linked_transfers_are_all_or_nothing() {
    let mut state = fresh();
    state.execute(transfer(ISSUER, USERS[0], 100, TransferKind::Deposit), 0).unwrap();
    let before = state.clone();
    let linked = Command::Linked(vec![
        Transfer {
            debit: USERS[0],
            credit: USERS[1],
            amount: amount(80),
            kind: TransferKind::InferenceCreator,
            reference: String::new(),
        },
        Transfer {
            debit: USERS[0],
            credit: USERS[2],
            amount: amount(30),
            kind: TransferKind::InferenceCreator,
            reference: String::new(),
        },
    ]);
    assert!(matches!(state.execute(linked, 0), Err(LedgerError::InsufficientBalance { .. })));
    assert_eq!(state, before);
    assert_eq!(state.execute(transfer(USERS[0], USERS[0], 1, TransferKind::Deposit), 0), Err(LedgerError::SameAccount));
    assert_eq!(
        state.execute(transfer(USERS[0], 99, 1, TransferKind::Deposit), 0),
        Err(LedgerError::UnknownAccount(99))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// A paid call's transfers: all from the caller, none of zero, none to
    /// the caller, one per share otherwise; the caller pays the whole price,
    /// or, calling their own model, the price less their own share; applied
    /// to a ledger, every account moves by exactly its share.
    #[test]
    fn a_charge_pays_each_share_once_and_a_creator_never_pays_themselves(
        price in prop_oneof![0u64..1_000, 0u64..=Amount::MAX.minor_units()],
        creator_bps in 0u32..=10_000,
        node_fraction in 0u32..=10_000,
        own_model in any::<bool>(),
        balance_extra in 0u64..1_000,
    ) {
        let node_bps = (10_000 - creator_bps) * node_fraction / 10_000;
        let split = FeeSplit::new(creator_bps, node_bps, 10_000 - creator_bps - node_bps).unwrap();
        let shares = split.split(amount(price));
        let (caller, creator) = if own_model { (USERS[0], USERS[0]) } else { (USERS[0], USERS[1]) };
        let parties = ChargeParties { caller, creator, node: NODE, treasury: TREASURY };
        let transfers = charge_transfers(parties, shares, "m@1");
        let expected = if own_model { price - shares.creator.minor_units() } else { price };
        prop_assert_eq!(charged(&transfers), expected);
        for t in &transfers {
            prop_assert_eq!(t.debit, caller);
            prop_assert!(t.credit != caller && t.amount > Amount::ZERO);
        }
        let mut credits: Vec<i64> = transfers.iter().map(|t| t.credit).collect();
        credits.dedup();
        prop_assert_eq!(credits.len(), transfers.len(), "one transfer per party");

        // Applied: the caller can pay exactly that, and each party gets its share.
        let mut state = fresh();
        let funded = expected.saturating_add(balance_extra).min(Amount::MAX.minor_units());
        if funded > 0 {
            state.execute(transfer(ISSUER, caller, funded, TransferKind::Deposit), 0).unwrap();
        }
        let before = state.clone();
        if transfers.is_empty() {
            prop_assert_eq!(expected, 0);
        } else {
            state.execute(Command::Linked(transfers.clone()), 0).unwrap();
            let gained = |id: i64| state.accounts[&id].balance() - before.accounts[&id].balance();
            prop_assert_eq!(gained(caller), -(expected as i128));
            prop_assert_eq!(gained(NODE), shares.node.minor_units() as i128);
            prop_assert_eq!(gained(TREASURY), shares.treasury.minor_units() as i128);
            if !own_model {
                prop_assert_eq!(gained(creator), shares.creator.minor_units() as i128);
            }
        }
    }
}
