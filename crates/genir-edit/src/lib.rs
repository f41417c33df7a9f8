//! genir-edit: add, delete and change documents in a trained GenIR (DSI) model without retraining.
//!
//! - **Delete** ([`Editor::delete`]): the document is marked deleted in the docid scheme, so the constrained
//!   decoder ([`genir_train::search::Searcher`]) can never return it (any docid scheme); for atomic docids its
//!   output row is also replaced by one whose logit stays a margin below the best other docid on every cached
//!   query, so a model exported to Hugging Face (searched without the scheme's restriction) no longer
//!   retrieves it either. A row edit changes no other docid's logit, so other documents can only gain.
//! - **Add** ([`Editor::add`], atomic docids): the vocabulary grows by one row per document (tokenizer and
//!   `docids.json` follow), then either [`AddMethod::IncDsi`] solves the row by L-BFGS (Kishore et al., ICML
//!   2023) or [`AddMethod::RankOne`] gives it a fresh row and edits the last decoder feed-forward block with a
//!   MEMIT-style closed-form low-rank update (the locate-then-edit family: ROME, MEMIT, DOME).
//! - **Change** ([`Editor::change`], atomic docids): the docid's row is re-solved so that the new content finds
//!   it and content only in the old text no longer does.
//! - **Edit log** ([`log`]): every edit is saved beside the model (`edits/`), can be listed, replayed on
//!   another copy bit for bit ([`Editor::replay_from`]) and undone exactly ([`Editor::undo`]).
//! - **Evaluation** ([`eval`]): edit success, retention, locality and time of each method against continued
//!   training and full retraining, as a table (`genir_data::Table`) and markdown.
//!
//! For tied T5 heads (models trained from scratch), a docid's output row is also its input embedding; docid
//! tokens are never decoder inputs with atomic docids (the decoder emits one token after the start token)
//! and the tokenizer maps text to text tokens, so editing the row changes nothing else.
//!
//! ```no_run
//! use burn::prelude::*;
//! use genir_edit::{AddMethod, Editor, NewDocument};
//!
//! # fn main() -> Result<(), genir_edit::EditError> {
//! let dir = std::path::Path::new("models/dsi");
//! let mut ed = Editor::open(dir, &Device::flex())?;
//! let wiki = genir_data::shipped::load("wiki-genir-mini")?;
//! ed.calibrate_from_collection(&wiki, 2000)?; // queries and documents that edits must not disturb
//! ed.add(&[NewDocument::new("new-1", "Text of the new document. It has sentences.")], AddMethod::IncDsi)?;
//! ed.delete(&["3".to_string()], &[])?;
//! ed.save(dir)?; // model, tokenizer, docids.json and edits/
//! for line in genir_edit::log::describe(ed.history()) {
//!     println!("{line}");
//! }
//! # Ok(()) }
//! ```

mod editor;
pub mod error;
pub mod eval;
pub mod linalg;
pub mod log;
pub mod reps;
pub mod tensors;

pub use editor::{AddMethod, ChangedDocument, EditConfig, Editor, NewDocument};
pub use error::{EditError, Result};

impl From<genir_data::Error> for EditError {
    fn from(e: genir_data::Error) -> Self {
        EditError::Train(genir_train::TrainError::Data(e))
    }
}

/// Lists the edits of a model folder (empty when it has no edit log).
pub fn list_edits(dir: &std::path::Path) -> Result<Vec<log::EditRecord>> {
    if log::EditLog::exists(dir) {
        Ok(log::EditLog::load(dir)?.records)
    } else {
        Ok(Vec::new())
    }
}

/// Undoes the last `n` edits of a model folder in place.
pub fn undo_in_folder(
    dir: &std::path::Path,
    n: usize,
    device: &burn::prelude::Device,
) -> Result<Vec<log::EditRecord>> {
    let mut ed = Editor::open(dir, device)?;
    let undone = ed.undo(n)?;
    ed.save(dir)?;
    Ok(undone)
}

/// Replays the edit log of `from` onto the model folder `onto` (a copy of the same base model), in place.
pub fn replay_in_folder(
    from: &std::path::Path,
    onto: &std::path::Path,
    device: &burn::prelude::Device,
) -> Result<usize> {
    let mut ed = Editor::open(onto, device)?;
    let n = ed.replay_from(from)?;
    ed.save(onto)?;
    Ok(n)
}

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
