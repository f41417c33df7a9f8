//! `genir edit`: add, delete and change documents in a trained model without retraining; list, undo and
//! replay the edit log.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::{Args, Subcommand};
use genir_data::Collection;
use genir_edit::{AddMethod, ChangedDocument, Editor, NewDocument};

use crate::dsi::{corpus_of, load_collection};

pub const EXAMPLES: &str = "Examples:
  genir edit add --model models/dsi --docid new-1 --title Anarchism --text 'A new passage about ...' \\
      --query 'an example query' --method incdsi
  genir edit add --model models/dsi --jsonl new-docs.jsonl --method rank-one
  genir edit delete --model models/dsi --docid 17,256
  genir edit change --model models/dsi --docid 3 --text 'The passage, rewritten.'
  genir edit list --model models/dsi
  genir edit undo --model models/dsi -n 1
  genir edit replay --from models/dsi --onto models/dsi-copy

Edits change the model folder in place (model.safetensors, tokenizer.json, docids.json) and append to its edit
log (edits/); `undo` restores the original bits. Anchors (the model's own documents and training queries, which
the edits must not disturb) come from the collection the model was trained on (--corpus to override) and from
the documents that earlier edits added or changed (the edit log keeps their text).
--jsonl: one {\"docid\", \"title\", \"text\", \"queries\"} object per line.";

/// `genir edit ...`.
#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(subcommand)]
    pub command: EditCommand,
}

/// The edit operations.
#[derive(Subcommand, Debug)]
pub enum EditCommand {
    /// Add documents with new docids (IncDSI or a rank-one MLP edit).
    Add(AddArgs),
    /// Delete documents: never retrievable again, and removed from the exported model's scores.
    Delete(DeleteArgs),
    /// Change a document's content (same docid).
    Change(ChangeArgs),
    /// List the edit log.
    List(ModelArg),
    /// Undo the last edits (bit for bit).
    Undo(UndoArgs),
    /// Apply another folder's edit log to this copy of the same base model.
    Replay(ReplayArgs),
}

/// Where the model and its anchors come from.
#[derive(Args, Debug)]
pub struct Target {
    /// Model folder written by `genir train` (edited in place).
    #[arg(long)]
    pub model: PathBuf,
    /// Collection whose documents and training queries are the anchors (default: the model's).
    #[arg(long)]
    pub corpus: Option<String>,
    /// Most anchors.
    #[arg(long, default_value_t = 2000)]
    pub anchors: usize,
}

/// Arguments of `genir edit add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    pub target: Target,
    /// Docid of the new document (with --text).
    #[arg(long, requires = "text", conflicts_with = "jsonl")]
    pub docid: Option<String>,
    /// Title of the new document.
    #[arg(long, default_value = "")]
    pub title: String,
    /// Text of the new document.
    #[arg(long)]
    pub text: Option<String>,
    /// Example queries of the new document (repeatable).
    #[arg(long = "query")]
    pub queries: Vec<String>,
    /// Documents to add, one JSON object per line.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// incdsi or rank-one.
    #[arg(long, default_value = "incdsi")]
    pub method: String,
}

/// Arguments of `genir edit delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub target: Target,
    /// Docids to delete (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub docid: Vec<String>,
}

/// Arguments of `genir edit change`.
#[derive(Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub target: Target,
    /// The document.
    #[arg(long)]
    pub docid: String,
    /// New title.
    #[arg(long, default_value = "")]
    pub title: String,
    /// New text.
    #[arg(long)]
    pub text: String,
    /// Example queries about the new content (repeatable).
    #[arg(long = "query")]
    pub queries: Vec<String>,
}

/// A model folder.
#[derive(Args, Debug)]
pub struct ModelArg {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
}

/// Arguments of `genir edit undo`.
#[derive(Args, Debug)]
pub struct UndoArgs {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// How many edits to undo.
    #[arg(short, default_value_t = 1)]
    pub n: usize,
}

/// Arguments of `genir edit replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Folder whose edit log is replayed.
    #[arg(long)]
    pub from: PathBuf,
    /// Copy of the same base model, edited in place.
    #[arg(long)]
    pub onto: PathBuf,
}

fn open(t: &Target, device: &Device) -> Result<Editor> {
    open_with_collection(t, device).map(|(ed, _)| ed)
}

/// The editor, calibrated on the model's collection, and the collection.
fn open_with_collection(t: &Target, device: &Device) -> Result<(Editor, Collection)> {
    let mut ed =
        Editor::open(&t.model, device).with_context(|| format!("opening {}", t.model.display()))?;
    let c = load_collection(&corpus_of(&t.model, t.corpus.as_deref())?)?;
    let n = ed.calibrate_from_collection(&c, t.anchors)?;
    tracing::info!("{n} anchors");
    Ok((ed, c))
}

fn read_jsonl(path: &Path) -> Result<Vec<NewDocument>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<NewDocument>(l)
                .with_context(|| format!("{}:{}: not a document object", path.display(), i + 1))
        })
        .collect()
}

fn done(ed: &Editor, dir: &Path) -> Result<()> {
    ed.save(dir)
        .with_context(|| format!("saving {}", dir.display()))?;
    if let Some(last) = ed.history().last() {
        for line in genir_edit::log::describe(std::slice::from_ref(last)) {
            println!("{line}");
        }
    }
    Ok(())
}

pub fn run(args: EditArgs, device: &Device) -> Result<()> {
    match args.command {
        EditCommand::Add(a) => {
            let docs = match (&a.jsonl, &a.docid, &a.text) {
                (Some(p), _, _) => read_jsonl(p)?,
                (None, Some(d), Some(t)) => vec![NewDocument {
                    docid: d.clone(),
                    title: a.title.clone(),
                    text: t.clone(),
                    queries: a.queries.clone(),
                }],
                _ => bail!("give --docid and --text, or --jsonl"),
            };
            if docs.is_empty() {
                bail!("no documents to add");
            }
            let method: AddMethod = a.method.parse()?;
            let mut ed = open(&a.target, device)?;
            ed.add(&docs, method)?;
            done(&ed, &a.target.model)
        }
        EditCommand::Delete(a) => {
            let mut ed = open(&a.target, device)?;
            ed.delete(&a.docid, &[])?;
            done(&ed, &a.target.model)
        }
        EditCommand::Change(a) => {
            let (mut ed, c) = open_with_collection(&a.target, device)?;
            // the text the model holds for the document (the collection's, or that of its latest logged
            // addition or change): its sentences that the new text drops are pushed down
            let old_text = ed.current_text(&a.docid, &c);
            ed.change(&[ChangedDocument {
                docid: a.docid.clone(),
                title: a.title.clone(),
                text: a.text.clone(),
                old_text,
                queries: a.queries.clone(),
            }])?;
            done(&ed, &a.target.model)
        }
        EditCommand::List(m) => {
            let records = genir_edit::list_edits(&m.model)?;
            if records.is_empty() {
                println!("{}: no edits", m.model.display());
            }
            for line in genir_edit::log::describe(&records) {
                println!("{line}");
            }
            Ok(())
        }
        EditCommand::Undo(u) => {
            let undone = genir_edit::undo_in_folder(&u.model, u.n, device)?;
            for line in genir_edit::log::describe(&undone) {
                println!("undone: {line}");
            }
            Ok(())
        }
        EditCommand::Replay(r) => {
            let n = genir_edit::replay_in_folder(&r.from, &r.onto, device)?;
            println!("replayed {n} edits onto {}", r.onto.display());
            Ok(())
        }
    }
}
