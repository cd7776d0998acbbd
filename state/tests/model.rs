//! An exhaustive model check (stateright, breadth-first) of the delivery protocol whose
//! decisions live in `plutus_state::protocol`: every interleaving of the service's steps
//! for two orders with an ERP that imports and deletes final names at any moment, the
//! temp clean-up, sled's own background flush, service crashes and lost SFTP requests
//! and replies. Every recovery decision is made by the product's `recover_sent`, so
//! the check covers the code's table, not a copy of it.
//!
//! The model, per order (a name with fixed content):
//! - local side: the file is in the outbox or, after the archive move, in the archive;
//! - journal: `pending → sent(temp) → verified → archived`, or `failed`. Writes go to
//!   memory; a flush (the service's, or sled's own at any moment) makes all of them
//!   durable; a crash sets memory back to the durable journal and forgets every step
//!   in hand, the inbox and the local disk keep what was done;
//! - inbox: one temp name per upload attempt (never reused; absent, partial or
//!   complete) and the final name; the rename never replaces an existing final name;
//! - network: each SFTP request is answered, lost before the server (no effect, an
//!   error) or executed with its reply lost (effect, an error). After an error the
//!   entry is recovered: `pending` starts a new attempt, `sent` does STAT final, STAT
//!   temp, `recover_sent`;
//! - clean-up: at any moment, removes a temp that no `sent` entry names and no upload
//!   in progress is writing.
//!
//! Properties: imported at most once, a final name never holds a partial file, archived
//! only once imported or complete under the final name (all `always`); at quiescence
//! (no service step, nothing to import, nothing to clean up) every order is imported
//! exactly once and archived and no temp is left (`always`, true when not quiescent:
//! the model has no cycles, so every run ends in such a state or at a bound); and that
//! state is reachable (`sometimes`, against a vacuous model).
//!
//! Bounds: 2 orders, at most 2 crashes and 2 lost requests or replies in all, and
//! 1 + 2 + 2 upload attempts per order — one per fault, so never the bound that stops a
//! run (asserted). To stay within seconds in a debug build, states that differ only by
//! the order of the two orders are checked once, the durable journal is forgotten once
//! no crash is left (nothing reads it any more), and a crash that would lose nothing is
//! not explored. The main check runs on 2 threads, so a trace it found would not
//! always be the shortest; the broken variants run on one, and theirs are (cut at the
//! first state that violates the property).
//!
//! Left out: foreign or damaged files in the inbox (so the real table never reaches
//! `Conflict` or `Reupload`), the local file changing after intake, operator replays
//! and forced re-sends, retry delays and the retry limit, a request executed by the
//! server after the client gave up on it, a lost local rename, and several instances
//! of the service.

use plutus_state::protocol::{recover_sent, Recovery, Seen};
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

const ORDERS: usize = 2;
const MAX_CRASHES: u8 = 2;
const MAX_LOST: u8 = 2;
/// One attempt, and one more per fault at most: never the bound that stops a search
/// (the main check asserts it).
const MAX_ATTEMPTS: usize = 1 + MAX_CRASHES as usize + MAX_LOST as usize;

const AT_MOST_ONCE: &str = "an order is imported at most once";
const NO_BAD_FINAL: &str = "a final name never holds partial or foreign content";
const ARCHIVED_AFTER_DELIVERY: &str =
    "a local file is archived only once its order is imported or complete under its final name";
const QUIESCENCE: &str =
    "at quiescence every order is imported exactly once and archived, and no temp is left";
const DELIVERED: &str = "quiescence with every order imported and archived is reachable";

/// What a remote file holds: a prefix of the order's bytes (an upload cut short) or
/// all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Content {
    Partial,
    Complete,
}

/// What a STAT with size and CRC32 reports for a name.
fn seen(file: Option<Content>) -> Seen {
    match file {
        None => Seen::Absent,
        Some(Content::Complete) => Seen::Same,
        Some(Content::Partial) => Seen::Different,
    }
}

/// A journal entry's state as far as the protocol goes; `Sent` names its temp (the
/// attempt number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Entry {
    Pending,
    Sent(u8),
    Verified,
    Archived,
    Failed,
}

/// Where the local file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Local {
    Outbox,
    Archive,
}

/// One step of the service for one order, each atomic (a crash falls between two), in
/// the order the service takes them. The number is the attempt whose temp name the
/// step works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    // A `pending` entry: a new attempt.
    NewAttempt,
    CreateTemp(u8),
    WriteTemp(u8),
    ReadBack(u8),
    RemoveBadTemp(u8),
    JournalSent(u8),
    FlushSent(u8),
    Rename(u8),
    JournalVerified,
    FlushVerified,
    ArchiveMove,
    JournalArchived,
    // Recovery of a `sent` entry.
    StatFinal(u8),
    StatTemp(u8, Seen),
    Decide(u8, Seen, Seen),
    JournalFailed,
    RemoveTempToReupload(u8),
    JournalPending,
    FlushPending(u8),
}

/// The kind of SFTP request a step sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    /// Has no effect on the server: a lost reply is the same as a lost request.
    Read,
    /// Changes the inbox: its reply can be lost after the change is made.
    Write,
}

impl Op {
    /// The SFTP request the step sends, if any (the others are local).
    fn request(self) -> Option<Request> {
        match self {
            Op::ReadBack(_) | Op::StatFinal(_) | Op::StatTemp(..) => Some(Request::Read),
            Op::CreateTemp(_)
            | Op::WriteTemp(_)
            | Op::RemoveBadTemp(_)
            | Op::Rename(_)
            | Op::RemoveTempToReupload(_) => Some(Request::Write),
            _ => None,
        }
    }

    /// The temp of an upload in progress, which no `sent` entry names yet.
    fn uploading(self) -> Option<u8> {
        match self {
            Op::CreateTemp(t)
            | Op::WriteTemp(t)
            | Op::ReadBack(t)
            | Op::RemoveBadTemp(t)
            | Op::JournalSent(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Order {
    local: Local,
    /// The journal as the running service reads it (unflushed writes included).
    journal: Entry,
    /// What a crash leaves.
    durable: Entry,
    /// Upload attempts started; attempt `t` uploads to temp name `t`.
    attempts: u8,
    temps: [Option<Content>; MAX_ATTEMPTS],
    final_: Option<Content>,
    imports: u8,
    /// The step in hand; `None`: the next one follows from the journal entry.
    step: Option<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    orders: [Order; ORDERS],
    crashes: u8,
    lost: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// Order `.0`'s next step; its request, if any, reaches the server and the reply
    /// (which may be a refusal) reaches the service.
    Step(usize, Op),
    /// Order `.0`'s next step; its request is lost before the server: no effect, an error.
    Lost(usize, Op),
    /// Order `.0`'s next step; the server executes it, the reply is lost: an error.
    ReplyLost(usize, Op),
    /// The ERP imports the file under order `.0`'s final name and deletes it.
    Import(usize),
    /// The temp clean-up removes temp `.1` of order `.0`.
    CleanUp(usize, u8),
    /// sled writes its buffers on its own.
    SledFlush,
    /// The service dies and restarts from its durable journal.
    Crash,
}

/// The delivery protocol; the first three fields are what a broken variant changes.
struct Delivery {
    /// Flush the journal (`sent` durable) before the rename request leaves.
    flush_before_rename: bool,
    /// The recovery decision for a `sent` entry.
    decide: fn(Seen, Seen) -> Recovery,
    /// The clean-up leaves alone the temp of an upload in progress (not yet named by a
    /// `sent` entry).
    clean_up_spares_uploads: bool,
    /// Keep the orders of every state sorted (symmetry reduction; an action's order
    /// number then refers to the state it is taken in, so a trace is harder to read).
    symmetry: bool,
    /// Which recovery decisions the search took (a bit per `Recovery`), to show which
    /// rows of the table the model reaches.
    decisions: Arc<AtomicU8>,
    /// Whether some state needed more upload attempts than `MAX_ATTEMPTS`.
    attempt_bound_hit: Arc<AtomicBool>,
}

impl Delivery {
    fn new(flush_before_rename: bool, decide: fn(Seen, Seen) -> Recovery) -> Self {
        Delivery {
            flush_before_rename,
            decide,
            clean_up_spares_uploads: true,
            symmetry: false,
            decisions: Arc::new(AtomicU8::new(0)),
            attempt_bound_hit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The service's next step for an order, if it has one.
    fn next_step(order: &Order) -> Option<Op> {
        order.step.or(match order.journal {
            Entry::Pending => Some(Op::NewAttempt),
            Entry::Sent(t) => Some(Op::StatFinal(t)),
            Entry::Verified => Some(Op::ArchiveMove),
            Entry::Archived | Entry::Failed => None,
        })
    }

    /// A temp the clean-up may remove: no `sent` entry names it and no upload is
    /// writing it.
    fn leftover(&self, order: &Order, t: u8) -> bool {
        order.temps[t as usize].is_some()
            && order.journal != Entry::Sent(t)
            && (!self.clean_up_spares_uploads || order.step.and_then(Op::uploading) != Some(t))
    }

    /// Nothing more can happen without a fault: no service step, nothing for the ERP
    /// to import, nothing for the clean-up to remove.
    fn quiescent(&self, world: &World) -> bool {
        world.orders.iter().all(|o| {
            Self::next_step(o).is_none()
                && o.final_.is_none()
                && (0..o.attempts).all(|t| !self.leftover(o, t))
        })
    }

    fn delivered(world: &World) -> bool {
        world.orders.iter().all(|o| {
            o.imports == 1
                && o.local == Local::Archive
                && o.journal == Entry::Archived
                && o.temps.iter().all(Option::is_none)
        })
    }

    /// The inbox side of a request (what the server does when it gets it).
    fn execute(order: &mut Order, op: Op) -> bool {
        match op {
            Op::CreateTemp(t) => order.temps[t as usize] = Some(Content::Partial),
            Op::WriteTemp(t) => {
                // Writes go through the open handle: a removed name stays removed.
                let temp = &mut order.temps[t as usize];
                *temp = temp.map(|_| Content::Complete);
            }
            Op::RemoveBadTemp(t) | Op::RemoveTempToReupload(t) => order.temps[t as usize] = None,
            Op::Rename(t) => {
                // Never over an existing final name; no such file: refused too.
                if order.final_.is_some() || order.temps[t as usize].is_none() {
                    return false;
                }
                order.final_ = order.temps[t as usize].take();
            }
            _ => {}
        }
        true
    }

    fn flush(world: &mut World) {
        for o in &mut world.orders {
            o.durable = o.journal;
        }
    }

    fn record(&self, decision: Recovery) {
        self.decisions
            .fetch_or(1 << decision as u8, Ordering::Relaxed);
    }

    fn decisions_taken(&self) -> BTreeSet<Recovery> {
        let bits = self.decisions.load(Ordering::Relaxed);
        ALL_DECISIONS
            .into_iter()
            .filter(|d| bits & (1 << *d as u8) != 0)
            .collect()
    }

    /// A step whose request (if any) was answered.
    fn step(&self, world: &mut World, i: usize, op: Op) -> Option<()> {
        let order = &mut world.orders[i];
        let next = match op {
            Op::NewAttempt => {
                if order.attempts as usize == MAX_ATTEMPTS {
                    self.attempt_bound_hit.store(true, Ordering::Relaxed);
                    return None;
                }
                order.attempts += 1;
                Some(Op::CreateTemp(order.attempts - 1))
            }
            Op::CreateTemp(t) => {
                Self::execute(order, op);
                Some(Op::WriteTemp(t))
            }
            Op::WriteTemp(t) => {
                Self::execute(order, op);
                Some(Op::ReadBack(t))
            }
            Op::ReadBack(t) => match order.temps[t as usize] {
                Some(Content::Complete) => Some(Op::JournalSent(t)),
                _ => Some(Op::RemoveBadTemp(t)),
            },
            Op::RemoveBadTemp(_) => {
                Self::execute(order, op);
                None
            }
            Op::JournalSent(t) => {
                order.journal = Entry::Sent(t);
                Some(if self.flush_before_rename {
                    Op::FlushSent(t)
                } else {
                    Op::Rename(t)
                })
            }
            Op::FlushSent(t) => {
                Self::flush(world);
                world.orders[i].step = Some(Op::Rename(t));
                return Some(());
            }
            Op::Rename(_) => Self::execute(order, op).then_some(Op::JournalVerified),
            Op::JournalVerified => {
                order.journal = Entry::Verified;
                Some(Op::FlushVerified)
            }
            Op::FlushVerified => {
                Self::flush(world);
                world.orders[i].step = Some(Op::ArchiveMove);
                return Some(());
            }
            Op::ArchiveMove => {
                // Idempotent: already in the archive counts as moved.
                order.local = Local::Archive;
                Some(Op::JournalArchived)
            }
            Op::JournalArchived => {
                order.journal = Entry::Archived;
                None
            }
            Op::StatFinal(t) => Some(Op::StatTemp(t, seen(order.final_))),
            Op::StatTemp(t, final_) => Some(Op::Decide(t, final_, seen(order.temps[t as usize]))),
            Op::Decide(t, final_, temp) => {
                let decision = (self.decide)(final_, temp);
                self.record(decision);
                // As the pipeline does it: a temp still there after `AlreadyDelivered`
                // or `Conflict` is left to the clean-up (the entry no longer names it);
                // `Reupload` makes `pending` durable before it removes the temp.
                Some(match decision {
                    Recovery::AlreadyDelivered | Recovery::TakenByErp => Op::JournalVerified,
                    Recovery::Conflict => Op::JournalFailed,
                    Recovery::Rename => Op::Rename(t),
                    Recovery::Reupload => Op::JournalPending,
                })
            }
            Op::JournalFailed => {
                order.journal = Entry::Failed;
                None
            }
            Op::RemoveTempToReupload(_) => {
                Self::execute(order, op);
                None
            }
            Op::JournalPending => {
                let Entry::Sent(t) = order.journal else {
                    unreachable!("only a sent entry is recovered")
                };
                order.journal = Entry::Pending;
                Some(Op::FlushPending(t))
            }
            Op::FlushPending(t) => {
                Self::flush(world);
                world.orders[i].step = Some(Op::RemoveTempToReupload(t));
                return Some(());
            }
        };
        order.step = next;
        Some(())
    }
}

const ALL_DECISIONS: [Recovery; 5] = [
    Recovery::AlreadyDelivered,
    Recovery::Conflict,
    Recovery::Rename,
    Recovery::TakenByErp,
    Recovery::Reupload,
];

impl Model for Delivery {
    type State = World;
    type Action = Action;

    fn init_states(&self) -> Vec<World> {
        let order = Order {
            local: Local::Outbox,
            journal: Entry::Pending,
            durable: Entry::Pending,
            attempts: 0,
            temps: [None; MAX_ATTEMPTS],
            final_: None,
            imports: 0,
            step: None,
        };
        vec![World {
            orders: std::array::from_fn(|_| order.clone()),
            crashes: 0,
            lost: 0,
        }]
    }

    fn actions(&self, world: &World, actions: &mut Vec<Action>) {
        for (i, order) in world.orders.iter().enumerate() {
            if let Some(op) = Self::next_step(order) {
                actions.push(Action::Step(i, op));
                if let (Some(request), true) = (op.request(), world.lost < MAX_LOST) {
                    actions.push(Action::Lost(i, op));
                    if request == Request::Write {
                        actions.push(Action::ReplyLost(i, op));
                    }
                }
            }
            if order.final_.is_some() {
                actions.push(Action::Import(i));
            }
            for t in 0..order.attempts {
                if self.leftover(order, t) {
                    actions.push(Action::CleanUp(i, t));
                }
            }
        }
        if world.orders.iter().any(|o| o.journal != o.durable) {
            actions.push(Action::SledFlush);
        }
        // A crash that loses nothing is the same as no crash: not explored.
        let loses_something = world
            .orders
            .iter()
            .any(|o| o.step.is_some() || o.journal != o.durable);
        if world.crashes < MAX_CRASHES && loses_something {
            actions.push(Action::Crash);
        }
    }

    fn next_state(&self, world: &World, action: Action) -> Option<World> {
        let mut next = world.clone();
        match action {
            Action::Step(i, op) => self.step(&mut next, i, op)?,
            Action::Lost(i, _) => {
                next.lost += 1;
                next.orders[i].step = None;
            }
            Action::ReplyLost(i, op) => {
                next.lost += 1;
                Self::execute(&mut next.orders[i], op);
                next.orders[i].step = None;
            }
            Action::Import(i) => {
                let order = &mut next.orders[i];
                order.final_ = None;
                order.imports += 1;
            }
            Action::CleanUp(i, t) => next.orders[i].temps[t as usize] = None,
            Action::SledFlush => Self::flush(&mut next),
            Action::Crash => {
                next.crashes += 1;
                for o in &mut next.orders {
                    o.journal = o.durable;
                    o.step = None;
                }
            }
        }
        if next.crashes == MAX_CRASHES {
            // Only a crash reads the durable journal: with none left, states that differ
            // in it alone are the same state.
            Self::flush(&mut next);
        }
        if self.symmetry {
            // The orders are interchangeable (same steps, faults and properties): a state
            // and the same state with its orders swapped are checked once.
            next.orders.sort();
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(AT_MOST_ONCE, |_, w: &World| {
                w.orders.iter().all(|o| o.imports <= 1)
            }),
            Property::always(NO_BAD_FINAL, |_, w: &World| {
                w.orders
                    .iter()
                    .all(|o| matches!(o.final_, None | Some(Content::Complete)))
            }),
            Property::always(ARCHIVED_AFTER_DELIVERY, |_, w: &World| {
                w.orders.iter().all(|o| {
                    o.local == Local::Outbox
                        || o.imports >= 1
                        || o.final_ == Some(Content::Complete)
                })
            }),
            Property::always(QUIESCENCE, |m, w: &World| {
                !m.quiescent(w) || Delivery::delivered(w)
            }),
            Property::sometimes(DELIVERED, |m, w: &World| {
                m.quiescent(w) && Delivery::delivered(w)
            }),
        ]
    }
}

/// A table that uploads again when neither the final name nor the temp is there —
/// exactly the case where the ERP took the renamed file before the reply came back.
fn reupload_when_nothing_is_seen(final_: Seen, temp: Seen) -> Recovery {
    match (final_, temp) {
        (Seen::Absent, Seen::Absent) => Recovery::Reupload,
        _ => recover_sent(final_, temp),
    }
}

/// The trace to the first state of `checker`'s discovery for `property` that violates
/// it (stateright keeps the last violation found in a block of states, which can be a
/// step or two further), and that state.
fn violation(
    checker: &impl Checker<Delivery>,
    property: &'static str,
) -> Option<(Vec<Action>, World)> {
    let holds = checker.model().property(property).condition;
    let mut steps = checker.discovery(property)?.into_vec();
    let first = steps
        .iter()
        .position(|(world, _)| !holds(checker.model(), world))
        .expect("a discovery ends in a violation");
    let last = steps[first].0.clone();
    // Each step is a state and the action taken from it.
    let actions = steps
        .drain(..first)
        .filter_map(|(_, action)| action)
        .collect();
    Some((actions, last))
}

/// Runs a broken variant until it violates `property`; prints the trace and returns it
/// with the state it ends in.
fn counterexample(model: Delivery, property: &'static str, name: &str) -> (Vec<Action>, World) {
    let started = Instant::now();
    let checker = model
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_bfs()
        .join();
    let (actions, last) = violation(&checker, property)
        .unwrap_or_else(|| panic!("{name}: not caught ({property} holds)"));
    eprintln!(
        "{name}: {} states in {:?}; violated: {property}; counterexample in {} steps:",
        checker.unique_state_count(),
        started.elapsed(),
        actions.len()
    );
    for action in &actions {
        eprintln!("  {action:?}");
    }
    (actions, last)
}

fn imports(world: &World) -> [u8; ORDERS] {
    world.orders.each_ref().map(|o| o.imports)
}

#[test]
fn every_interleaving_of_crashes_lost_replies_and_an_importing_erp_imports_each_order_once() {
    let started = Instant::now();
    let model = Delivery {
        symmetry: true,
        ..Delivery::new(true, recover_sent)
    };
    let checker = model.checker().threads(2).spawn_bfs().join();
    assert!(checker.is_done());
    eprintln!(
        "model check: {} states explored ({} generated, depth {}) in {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    let taken = checker.model().decisions_taken();
    eprintln!("recovery decisions taken: {taken:?}");
    for property in [
        AT_MOST_ONCE,
        NO_BAD_FINAL,
        ARCHIVED_AFTER_DELIVERY,
        QUIESCENCE,
    ] {
        if let Some((actions, last)) = violation(&checker, property) {
            let trace: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
            panic!(
                "violated: {property}\n  {}\n  => {last:?}",
                trace.join("\n  ")
            );
        }
    }
    assert!(
        checker.discovery(DELIVERED).is_some(),
        "the model never delivers everything: it is vacuous"
    );
    assert!(
        !checker.model().attempt_bound_hit.load(Ordering::Relaxed),
        "some state needed more than {MAX_ATTEMPTS} attempts: the bound cut the search"
    );
    // Every recovery a crash or a lost reply can lead to is reached.
    for d in [
        Recovery::AlreadyDelivered,
        Recovery::Rename,
        Recovery::TakenByErp,
    ] {
        assert!(taken.contains(&d), "recovery never decided {d:?}");
    }
}

#[test]
fn renaming_before_sent_is_durable_is_caught_as_a_duplicate_import() {
    let (actions, last) = counterexample(
        Delivery::new(false, recover_sent),
        AT_MOST_ONCE,
        "rename before a durable sent",
    );
    assert!(imports(&last).contains(&2), "{last:?}");
    assert!(actions.contains(&Action::Crash));
}

#[test]
fn re_uploading_when_temp_and_final_are_both_gone_is_caught_as_a_duplicate_import() {
    let (actions, last) = counterexample(
        Delivery::new(true, reupload_when_nothing_is_seen),
        AT_MOST_ONCE,
        "re-upload when nothing is seen",
    );
    assert!(imports(&last).contains(&2), "{last:?}");
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Step(_, Op::Decide(_, Seen::Absent, Seen::Absent))
    )));
}

/// "Removes temps that no `sent` entry names" is not enough: between its creation and
/// the `sent` record an upload's temp is named by nothing in the journal. Removing it
/// there makes the rename fail, and recovery then reads "temp and final both gone" as
/// taken by the ERP: the local file is archived and the order never imported.
#[test]
fn a_clean_up_that_removes_the_temp_of_an_upload_in_progress_is_caught_as_a_lost_order() {
    let (actions, last) = counterexample(
        Delivery {
            clean_up_spares_uploads: false,
            ..Delivery::new(true, recover_sent)
        },
        ARCHIVED_AFTER_DELIVERY,
        "clean-up removes an upload's temp",
    );
    assert!(imports(&last).contains(&0), "{last:?}");
    assert!(actions.iter().any(|a| matches!(a, Action::CleanUp(..))));
}
