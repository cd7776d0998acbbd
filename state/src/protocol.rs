//! The decisions of the delivery protocol that depend on what the server shows: pure
//! functions, no I/O. The pipeline calls them with what it saw in the inbox; the model
//! check (`state/tests/model.rs`) calls the very same functions in every interleaving
//! of crashes, lost replies and an ERP that imports and deletes files at once.
//!
//! The protocol, which these decisions rest on:
//! 1. a `pending` entry uploads to a temp name of its own attempt (never reused), reads
//!    it back, and only then journals `sent` with that temp path — **durably** (flushed)
//!    before the rename request leaves. So a `pending` entry was never renamed, and an
//!    entry whose temp may have been renamed is always `sent`.
//! 2. the ERP only ever takes final names, never temp names; the rename never replaces
//!    an existing final name. So the temp file is the evidence of where a delivery
//!    stands: present means "not renamed yet", absent (after `sent`) means "renamed".

use serde::{Deserialize, Serialize};

/// What one name in the inbox holds, compared with the entry's size and CRC32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Seen {
    /// Nothing under that name.
    Absent,
    /// A file with the entry's size and CRC32.
    Same,
    /// A file with other content (partial, foreign, or damaged).
    Different,
}

/// What to do with a `sent` entry, given what the inbox shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Recovery {
    /// The final name holds our bytes: `verified` (remove our temp if it is still there).
    AlreadyDelivered,
    /// The final name holds something else: `failed` as a conflict; never overwritten.
    Conflict,
    /// Our verified temp is there and the final name is free: rename it (no upload).
    Rename,
    /// Neither is there: the rename happened and the ERP took the file before we heard
    /// the reply. `verified`, with a note; never sent again.
    TakenByErp,
    /// Our temp is there but not what we verified (someone changed it): remove it and
    /// upload again. Safe, because the temp was not renamed.
    Reupload,
}

/// The recovery of a `sent` entry (after a crash, a lost reply, a timeout or a refused
/// rename). `final_` is what the final name holds, `temp` what the temp name this
/// entry's `sent` record names holds. The final name is looked at first: a temp that
/// vanishes between the two looks was renamed, and the final name then holds it or
/// the ERP took it — both end in `verified`, never in a second upload.
pub fn recover_sent(final_: Seen, temp: Seen) -> Recovery {
    match (final_, temp) {
        (Seen::Same, _) => Recovery::AlreadyDelivered,
        (Seen::Different, _) => Recovery::Conflict,
        (Seen::Absent, Seen::Same) => Recovery::Rename,
        (Seen::Absent, Seen::Absent) => Recovery::TakenByErp,
        (Seen::Absent, Seen::Different) => Recovery::Reupload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the exactly-once issue, row by row.
    #[test]
    fn every_row_of_the_recovery_table_is_as_specified() {
        use Recovery::*;
        use Seen::*;
        let table = [
            ((Same, Absent), AlreadyDelivered),
            ((Same, Same), AlreadyDelivered),
            ((Same, Different), AlreadyDelivered),
            ((Different, Absent), Conflict),
            ((Different, Same), Conflict),
            ((Different, Different), Conflict),
            ((Absent, Same), Rename),
            ((Absent, Absent), TakenByErp),
            ((Absent, Different), Reupload),
        ];
        for ((f, t), want) in table {
            assert_eq!(recover_sent(f, t), want, "final {f:?}, temp {t:?}");
        }
    }

    #[test]
    fn nothing_seen_never_means_upload_again_for_a_sent_entry() {
        assert_ne!(recover_sent(Seen::Absent, Seen::Absent), Recovery::Reupload);
    }
}
