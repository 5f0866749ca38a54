//! The write history every stored document carries (the mutex's and the multi-holder one's
//! alike): a revision that grows with every write, and the ids of the latest writes, newest
//! first. Together they let a writer whose answer was lost prove, from a later read, whether its
//! write landed (see [`History::succession_of`]); this file is the one place that logic lives.

use serde::{Deserialize, Serialize};

/// How many writes a document remembers (its own and those before it): about 600 bytes. A
/// read-back follows its lost answer after the SDK's retries, a second or two; eight clients
/// handing one lock round on one replica wrote more than eight times in that window (releases
/// then could not be confirmed), and none of their read-backs reached past this many.
pub const WRITE_HISTORY: usize = 32;

/// A random id given to each write of a lock document: 64 random bits, so two writes never
/// share one by chance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId(pub(super) String);

impl WriteId {
    fn generate() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    /// As [`WriteId::generate`] makes them. Anything else was written by hand into the bucket.
    fn is_well_formed(&self) -> bool {
        self.0.len() == 16 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// What a read-back learns from the document it found in place of the one it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// Our write landed and was then replaced: its id is in the stored history.
    Replaced,
    /// Our write never landed: the stored history names another write at our revision.
    Lost,
    /// The history does not reach back to our revision (too many writes since, or a writer that
    /// keeps none, such as the seed module): it cannot be told.
    Unknown,
}

/// One document's revision and write ids, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Grows by one with every write (see `LockDocument::revision` for why).
    pub revision: u64,
    /// This document's own write id first, then those of the writes it replaced.
    pub writes: &'a [WriteId],
}

impl History<'_> {
    /// The revision and history of the next write over this one: the next revision, a new
    /// write id, and this history behind it. A revision at the top of `u64` (a corrupt or
    /// hostile document; a real lock would need 10^19 writes) cannot grow, so the engine refuses
    /// to write over such a document at all (`can_grow`).
    pub fn next(self) -> (u64, Vec<WriteId>) {
        let writes = std::iter::once(WriteId::generate())
            // A history is carried only as far as its ids are ours: garbage written into the
            // bucket by hand is not copied forward (and cutting, not skipping, keeps every id
            // at the position its revision gives it).
            .chain(
                self.writes
                    .iter()
                    .take_while(|id| id.is_well_formed())
                    .take(WRITE_HISTORY - 1)
                    .cloned(),
            )
            .collect();
        (self.revision.saturating_add(1), writes)
    }

    /// Whether `ours` (a document this process wrote, whose answer it did not get) landed before
    /// this stored document replaced it. Every write is conditional on the version it replaces,
    /// so the stored history is the one sequence of writes that landed, newest first.
    ///
    /// Lost only when the history names another write *over the very document ours was
    /// written over*: that version was replaced once, and not by us. A revision number alone
    /// proves nothing, as revisions start over when the object is written by the old module
    /// (no revision, no history) or deleted and created again; a write at "our" revision in
    /// the new run is no evidence against ours, which may have landed before the restart.
    pub fn succession_of(self, ours: History<'_>) -> Succession {
        let Some(id) = ours.writes.first() else {
            return Succession::Unknown;
        };
        if self.writes.contains(id) {
            return Succession::Replaced;
        }
        let Some(back) = self
            .revision
            .checked_sub(ours.revision)
            .and_then(|b| usize::try_from(b).ok())
        else {
            return Succession::Unknown;
        };
        // Ours has no predecessor id when written as a create or over a document with no
        // history (the old module's, or one from before histories): nothing to match then.
        let before = back.checked_add(1).and_then(|i| self.writes.get(i));
        match (before, ours.writes.get(1)) {
            (Some(before), Some(our_before)) if before == our_before => Succession::Lost,
            _ => Succession::Unknown,
        }
    }
}

impl History<'_> {
    /// Whether this document was written after `earlier`, over it or over what replaced it: its
    /// history names `earlier`'s write, and it is not that write. Two looks at a lock that end
    /// in the wrong order (an answer that came late) are told apart by this, never by revision
    /// alone, which starts over when the old module writes a lock or it is deleted by hand.
    pub fn supersedes(self, earlier: History<'_>) -> bool {
        self.writes.first() != earlier.writes.first()
            && self.succession_of(earlier) == Succession::Replaced
    }
}

/// The revision and history of a document's first write (a create).
pub fn first() -> (u64, Vec<WriteId>) {
    (1, vec![WriteId::generate()])
}
