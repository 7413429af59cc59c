//! Showing a transfer's progress: one indicatif bar per blob on a
//! terminal, one plain line per event otherwise (logs, pipes, tests).

use std::collections::HashMap;
use std::io::IsTerminal;

use berth_proto::berth::transfer::v1::{BlobProgress, BlobState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
pub(crate) enum ProgressView {
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        style: ProgressStyle,
    },
    Lines,
}

/// The first 12 hex digits of a digest, as docker shows them.
fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

fn state_word(state: BlobState) -> &'static str {
    match state {
        BlobState::Unspecified => "waiting",
        BlobState::Exists => "exists",
        BlobState::Transferring => "transferring",
        BlobState::Done => "done",
        BlobState::Unpacked => "unpacked",
    }
}

impl ProgressView {
    /// Bars when stdout is a terminal, lines otherwise.
    pub(crate) fn for_stdout() -> Self {
        if !std::io::stdout().is_terminal() {
            return ProgressView::Lines;
        }
        let style = ProgressStyle::with_template(
            "{prefix:>20} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressView::Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: HashMap::new(),
            style,
        }
    }

    /// Shows one report.
    pub(crate) fn report(&mut self, blob: &BlobProgress) {
        let state = BlobState::try_from(blob.state).unwrap_or(BlobState::Unspecified);
        let (done, total) = (blob.done.max(0) as u64, blob.total.max(0) as u64);
        match self {
            ProgressView::Lines => println!(
                "{} {} {} {done}/{total}",
                blob.kind,
                blob.digest,
                state_word(state)
            ),
            ProgressView::Bars { multi, bars, style } => {
                let bar = bars.entry(blob.digest.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(total));
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("{} {}", blob.kind, short(&blob.digest)));
                    bar
                });
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(state_word(state));
                if matches!(state, BlobState::Unpacked) {
                    bar.finish();
                }
            }
        }
    }

    /// Leaves the bars drawn as they ended.
    pub(crate) fn finish(&mut self) {
        if let ProgressView::Bars { bars, .. } = self {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
        }
    }
}
