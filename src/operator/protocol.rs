//! The control socket's language, typed at both ends: the CLI and the service share
//! these types, so a request or an answer that one side changes and the other does
//! not is a compile error, not a parse failure at run time. One JSON line each way.

use plutus_state::{Record, Site, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    List {
        filter: ListFilter,
    },
    Show {
        key: String,
    },
    Stats,
    Export {
        since_ms: Option<u64>,
    },
    Replay {
        selector: Selector,
        dry_run: bool,
        force: bool,
        /// `--to`: the destination the replayed entries are bound to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Site>,
    },
    /// Close a failed entry whose local copy is gone (`journal forget`). Who asks is
    /// journaled: the control socket peer's credentials (or, with the service
    /// stopped, this process's), never a claim in the request.
    Forget {
        key: String,
        reason: String,
        dry_run: bool,
    },
}

impl Request {
    /// Whether the request only looks. The control socket lets the service's own user
    /// make these; every other request is for root and the operators' group. No
    /// wildcard: a new request must be placed on one side.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Ping
            | Request::List { .. }
            | Request::Show { .. }
            | Request::Stats
            | Request::Export { .. } => true,
            Request::Replay { .. } | Request::Forget { .. } => false,
        }
    }

    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::List { .. } => "journal list",
            Request::Show { .. } => "journal show",
            Request::Stats => "journal stats",
            Request::Export { .. } => "journal export",
            Request::Replay { .. } => "replay",
            Request::Forget { .. } => "journal forget",
        }
    }
}

/// The answer to each request, in the same order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "answer", content = "value", rename_all = "snake_case")]
pub enum Answer {
    Pong { pid: u32 },
    List(Vec<Record>),
    Show(Vec<Record>),
    Stats(Stats),
    Export(Vec<Receipt>),
    Replay(Replayed),
    Forget(Forgot),
}

/// One line back: the answer, or why there is none.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    Ok(Answer),
    Error(String),
}

/// `journal list` filters; all optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<State>,
    pub batch: Option<String>,
    /// Only entries detected within this many milliseconds.
    pub since_ms: Option<u64>,
    /// A glob on the file name.
    pub name: Option<String>,
    pub limit: Option<usize>,
}

/// How the destination is doing, as the running service sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DestinationStatus {
    pub url: String,
    pub up: bool,
    /// Consecutive failed probes.
    pub failures: u32,
    /// When the next probe is due (ms since epoch), while backing off.
    pub next_probe_at: Option<u64>,
    pub last_error: Option<String>,
    /// What the last probe of the server found: does its rename refuse to overwrite,
    /// does fsync work. `None` until a connection was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_refuses_overwrite: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync: Option<bool>,
    /// When the current outage began (ms since epoch), while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub counts: BTreeMap<State, u64>,
    /// Detection time of the oldest entry not yet verified (ms since epoch).
    pub oldest_pending_at: Option<u64>,
    pub last_delivery_at: Option<u64>,
    pub delivered_last_hour: u64,
    pub delivered_last_day: u64,
    pub failed_last_hour: u64,
    pub failed_last_day: u64,
    /// `None` when the service is not running.
    pub destination: Option<DestinationStatus>,
    /// The backup destination, when one is configured and the service runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<DestinationStatus>>,
    /// Since when new deliveries go to the backup (ms since epoch), if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_over_since: Option<u64>,
}

/// A delivery receipt, for reconciling with what the ERP imported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub name: String,
    pub crc32: String,
    pub size: u64,
    pub batch: String,
    pub detected: String,
    pub sent: Option<String>,
    pub verified: Option<String>,
    pub archived: Option<String>,
    pub remote_path: Option<String>,
    pub archive_path: Option<String>,
    /// Delivery attempts made, the one that got through included
    /// (`Record::attempts_made`).
    #[serde(default)]
    pub attempts: u32,
    /// Where the verified copy went (`primary`, `backup`), with a backup configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Site>,
}

/// Which entries `replay` acts on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Batch(String),
    /// Every failed entry, or those that failed within this many milliseconds.
    Failed(Option<u64>),
    Names(Vec<String>),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Replayed {
    /// (id, name) put back to pending.
    pub replayed: Vec<(u64, String)>,
    /// (name, reason) left as they were.
    pub refused: Vec<(String, String)>,
    pub dry_run: bool,
}

/// What `journal forget` did, or why it did not.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forgot {
    pub id: u64,
    pub name: String,
    pub dry_run: bool,
    /// Why the entry was left as it was, and what to do instead.
    pub refused: Option<String>,
}
